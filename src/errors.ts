/**
 * Typed errors of NLFT Studio. Every error a user can cause carries a message that names
 * the file, record or field at fault and what was expected; hosts (CLI, worker) print
 * `message` only, never a stack trace, for any `NlftError`.
 */

/** What kind of failure an `NlftError` is; hosts may branch on it (the worker sends it as the error's `name`). */
export type ErrorCode =
  /** a model file (config, weights, tokenizer) is missing, malformed or unsupported */
  | 'model-format'
  /** no usable WebGPU adapter or device */
  | 'gpu-unavailable'
  /** the GPU device was lost */
  | 'device-lost'
  /** the GPU refused a command (a validation or out-of-memory error nobody caught) */
  | 'gpu-command'
  /** a buffer over the device limit or the memory budget */
  | 'gpu-memory'
  /** a bad command-line option or request field */
  | 'usage'
  /** a WGSL kernel failed to compile (a bug on our side) */
  | 'kernel'
  /** a dataset file or some of its records are invalid */
  | 'dataset'
  /** an NLFT view template is malformed */
  | 'templates'
  /** LoRA settings out of range */
  | 'lora-config'
  /** a LoRA rank the kernels cannot use */
  | 'lora-rank'
  /** LoRA factors of the wrong shape for the model */
  | 'lora-shape'
  /** an operation needs LoRA adapters and the model has none */
  | 'no-lora'
  /** a scored position or sequence layout outside the input */
  | 'bad-position'
  /** a token id outside the vocabulary */
  | 'bad-token'
  /** a model shape the kernels do not support */
  | 'unsupported-shape'
  /** an input with no tokens */
  | 'empty-input'
  /** a prompt with no tokens */
  | 'empty-prompt'
  /** a response with no tokens */
  | 'empty-response'
  /** a sequence that does not fit the length limit */
  | 'too-long'
  /** a required file or value is missing */
  | 'missing'
  /** a checkpoint that does not fit the run it should continue */
  | 'checkpoint'
  /** a run stored in the browser that cannot be read back or continued */
  | 'stored-run'
  /** the browser's storage quota refused a write (nothing of it was stored) */
  | 'storage-quota'
  /** a file could not be fetched */
  | 'fetch'
  /** a request to a host the person did not choose (the page and its worker reach only their own origin, the Hub URL and the judge endpoint entered) */
  | 'host-not-chosen'
  /** the judge endpoint failed or answered badly */
  | 'judge'
  /** no GPU, model or trained adapter yet for this call */
  | 'not-ready'
  /** cached saliency scores (an `nlft score` dump) that cannot be read back */
  | 'score-dump'
  /** a scorer model that cannot score for the trained model (another tokenizer) */
  | 'scorer'
  /** a method comparison (`nlft compare`'s compare.json) that cannot be read */
  | 'compare-file';

/** Base class: an expected failure with a user-facing message. */
export class NlftError extends Error {
  constructor(
    message: string,
    readonly code: ErrorCode,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** A model file (config.json, *.safetensors, tokenizer files) is missing, malformed or unsupported. */
export class ModelFormatError extends NlftError {
  constructor(
    readonly file: string,
    readonly field: string | undefined,
    detail: string,
  ) {
    super(`${file}${field ? ` (${field})` : ''}: ${detail}`, 'model-format');
  }
}

/**
 * The browser refused a write to IndexedDB because its storage quota is full. The write was one
 * transaction, so nothing of it was stored; the message names what was being saved and the
 * biggest stored items to delete.
 */
export class StorageQuotaError extends NlftError {
  constructor(detail: string) {
    super(detail, 'storage-quota');
  }
}

/**
 * A request to a host the person did not choose, refused by the app's host gate (src/util/net.ts):
 * names the URL and the origins the app may reach.
 */
export class HostNotChosenError extends NlftError {
  constructor(
    readonly url: string,
    detail: string,
  ) {
    super(detail, 'host-not-chosen');
  }
}

/** No usable WebGPU adapter/device, or a required feature/limit is missing. */
export class GpuUnavailableError extends NlftError {
  constructor(detail: string) {
    super(detail, 'gpu-unavailable');
  }
}

/**
 * The GPU device was lost (driver reset, GPU process crash, out of memory, tab backgrounded too
 * long). `during` says where a job stood when it happened (a training run: its step and the
 * checkpoint it can continue from).
 */
export class DeviceLostError extends NlftError {
  constructor(
    readonly reason: string,
    readonly detail: string,
    where?: string,
  ) {
    super(where ? `The GPU device was lost (${reason}: ${detail}) ${where}` : `GPU device lost (${reason}): ${detail}`, 'device-lost');
  }

  /** The same loss, its message saying where the job stood (e.g. "at step 4 of 8; …"). */
  during(where: string): DeviceLostError {
    return new DeviceLostError(this.reason, this.detail, where);
  }
}

/**
 * The GPU refused a command that no error scope caught (WebGPU's `uncapturederror`): a
 * validation error (a bug on our side) or an out-of-memory error. Everything the queue ran after it
 * is suspect, so work that reads results (a training step, an evaluation) stops.
 */
export class GpuCommandError extends NlftError {
  constructor(
    /** How many such errors the device reported so far. */
    readonly count: number,
    /** The first one's message. */
    readonly first: string,
  ) {
    super(`the GPU refused ${count === 1 ? 'a command' : `${count} commands`}; the first: ${first}`, 'gpu-command');
  }
}

/** A buffer larger than the device allows, or over the memory budget. */
export class GpuMemoryError extends NlftError {
  constructor(detail: string) {
    super(detail, 'gpu-memory');
  }
}

/** Bad command-line usage or option value. */
export class UsageError extends NlftError {
  constructor(detail: string) {
    super(detail, 'usage');
  }
}

/** A WGSL shader failed to compile or validate (a bug on our side, reported with the kernel name). */
export class KernelError extends NlftError {
  constructor(
    readonly kernel: string,
    detail: string,
  ) {
    super(`kernel ${kernel}: ${detail}`, 'kernel');
  }
}

/** One problem of one record. */
export interface DatasetProblem {
  /** 1-based record number, counting records only (JSON Lines' blank lines are not records). */
  record: number;
  /** 1-based line of the record, for JSON Lines; absent for a JSON array. */
  line?: number;
  /** The field at fault; "" when the record as a whole is (e.g. not an object). */
  field: string;
  /** What is wrong, with what was expected and what was found. */
  message: string;
}

/** A dataset file cannot be read, or some of its records are invalid (then `problems` lists them all). */
export class DatasetError extends NlftError {
  constructor(
    readonly file: string,
    detail: string,
    readonly problems: readonly DatasetProblem[] = [],
  ) {
    super(`${file}: ${detail}`, 'dataset');
  }
}

/** A template is malformed or uses a placeholder it may not; names the file (when any) and the field. */
export class TemplateError extends NlftError {
  constructor(
    readonly file: string | undefined,
    readonly field: string | undefined,
    detail: string,
  ) {
    const where = `${file ?? ''}${field ? `${file ? ' ' : ''}(${field})` : ''}`;
    super(where ? `${where}: ${detail}` : detail, 'templates');
  }
}
