/**
 * The progress line of a dataset being read and parsed (`nlft train`, `score`, `eval`, `prepare`),
 * on stderr: on a terminal one line rewritten in place; otherwise (a log, a pipe) plain lines, at
 * most one a second, so a file that reads in under a second prints nothing there.
 */
import { formatBytes } from '../../engine/buffers.ts';

/** Where the line goes and the clock it keeps (a test gives its own). */
export interface ProgressOutput {
  write(text: string): void;
  /** A terminal: the line is rewritten in place. */
  isTTY: boolean;
  /** Milliseconds. */
  now(): number;
}

/** stderr, with the process's clock. */
export const STDERR_PROGRESS: ProgressOutput = {
  write: (text) => void process.stderr.write(text),
  isTTY: process.stderr.isTTY === true,
  now: () => performance.now(),
};

/** Milliseconds between two plain lines (not a terminal), and between two rewrites on a terminal. */
const PLAIN_EVERY_MS = 1000;
const TTY_EVERY_MS = 100;

/**
 * A dataset's reading and parsing, reported as "data  reading FILE: X of Y, N records" (or, for a
 * line that only parses, "data  parsing FILE: N records").
 */
export class DatasetProgress {
  #bytes = 0;
  #total = 0;
  #records = 0;
  readonly #started: number;
  #shown: number;
  /** A line was written (plain) or is on screen (terminal). */
  #any = false;

  constructor(
    readonly file: string,
    readonly out: ProgressOutput = STDERR_PROGRESS,
  ) {
    this.#started = out.now();
    this.#shown = this.#started;
  }

  /** `bytes` of `total` read. */
  read(bytes: number, total: number): void {
    this.#bytes = bytes;
    this.#total = total;
    this.#show(false);
  }

  /** `records` parsed so far. */
  parsed = (records: number): void => {
    this.#records = records;
    this.#show(false);
  };

  /** The file is read and parsed: the last figures, when a line was shown. */
  end(): void {
    this.#show(true);
  }

  /** The line as it stands (a line that saw no bytes read only counts records). */
  text(): string {
    const records = `${this.#records.toLocaleString('en-US')} records`;
    if (this.#total === 0) return `data       parsing ${this.file}: ${records}`;
    return `data       reading ${this.file}: ${formatBytes(this.#bytes)} of ${formatBytes(this.#total)}${this.#records ? `, ${records}` : ''}`;
  }

  #show(last: boolean): void {
    const { out } = this;
    const now = out.now();
    if (out.isTTY) {
      if (last) {
        if (this.#any) out.write(`\r${this.text()}\x1b[K\n`);
      } else if (now - this.#shown >= TTY_EVERY_MS) {
        out.write(`\r${this.text()}\x1b[K`);
        this.#shown = now;
        this.#any = true;
      }
    } else if ((last && this.#any) || (!last && now - this.#shown >= PLAIN_EVERY_MS)) {
      out.write(`${this.text()}\n`);
      this.#shown = now;
      this.#any = true;
    }
  }
}
