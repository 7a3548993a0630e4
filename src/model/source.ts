/**
 * Where model files come from: a local folder (Node), a user-picked folder or the Hub (browser).
 * The model loader only sees this interface.
 */
export interface FileSource {
  /** Human-readable location used in messages, e.g. a folder path or "hub:org/name@main". */
  readonly label: string;
  /** Set when the source is one GGUF model file (with maybe a `tokenizer.json` beside it): its name. */
  readonly ggufFile?: string;
  /** Byte size of a file, or null when the file does not exist. */
  size(name: string): Promise<number | null>;
  /** Bytes [start, end) of a file. Throws ModelFormatError naming the file when it is missing. */
  readRange(name: string, start: number, end: number): Promise<Uint8Array>;
  /** The whole file. Throws ModelFormatError naming the file when it is missing. */
  read(name: string): Promise<Uint8Array>;
}
