/**
 * Typed errors of NLFT Studio. Every error a user can cause carries a message that names
 * the file, record or field at fault and what was expected; hosts (CLI, worker) print
 * `message` only, never a stack trace, for any `NlftError`.
 */

/** Base class: an expected failure with a user-facing message. */
export class NlftError extends Error {
  constructor(
    message: string,
    readonly code: string,
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

/** No usable WebGPU adapter/device, or a required feature/limit is missing. */
export class GpuUnavailableError extends NlftError {
  constructor(detail: string) {
    super(detail, 'gpu-unavailable');
  }
}

/** The GPU device was lost (driver reset, out of memory, tab backgrounded too long). */
export class DeviceLostError extends NlftError {
  constructor(
    readonly reason: string,
    detail: string,
  ) {
    super(`GPU device lost (${reason}): ${detail}`, 'device-lost');
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
