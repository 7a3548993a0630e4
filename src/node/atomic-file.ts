/** Writing a file so that a crash (kill -9, power loss) leaves the old file or the new one, never a part of it (Node). */
import { open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';

/**
 * Writes `content` to `file` atomically: into a temporary name beside it, flushed to the disk
 * (fsync), then renamed over `file` (atomic on POSIX file systems), and the folder flushed so the
 * rename itself survives a crash. A failed write removes the temporary file and leaves `file` as it was.
 */
export async function writeFileAtomic(file: string, content: string | Uint8Array): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const handle = await open(tmp, 'w');
  try {
    await handle.writeFile(content);
    await handle.sync();
  } catch (e) {
    await handle.close();
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await handle.close();
  await rename(tmp, file);
  const dir = await open(path.dirname(file), 'r');
  await dir.sync().finally(() => dir.close());
}
