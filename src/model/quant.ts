/**
 * Block-wise symmetric quantization of linear weights W [rows = out N, cols = in K], row-major f32,
 * in the exact buffer layout the WGSL matmul kernels read.
 *
 * A block is 32 consecutive elements along K within one row; each block has one f32 scale, stored
 * at `n * (K / 32) + k / 32`. Codes are packed little-end-first into u32 words:
 * - q8: scale = absmax / 127, code = clamp(round(w / scale), -127, 127) as a two's-complement byte;
 *   word `n * (K / 4) + k / 4`, byte `k % 4` (bits 8j..8j+7).
 * - q4: scale = absmax / 7, code = clamp(round(w / scale), -8, 7) stored as the nibble code + 8;
 *   word `n * (K / 8) + k / 8`, nibble `k % 8` (bits 4j..4j+3).
 * An all-zero block has scale 0 and all codes 0. Dequantized value = code * scale (one f32 rounding,
 * as the GPU computes it).
 */

export type QuantFormat = 'f32' | 'q8' | 'q4';

/** Every weight format, in menu order. */
export const QUANT_FORMATS: readonly QuantFormat[] = ['f32', 'q8', 'q4'];

export function isQuantFormat(v: unknown): v is QuantFormat {
  return QUANT_FORMATS.includes(v as QuantFormat);
}

export interface QuantizedMatrix {
  format: QuantFormat;
  rows: number;
  cols: number;
  /** f32: the weights themselves; q8/q4: packed codes (layout in the module comment). */
  data: Uint32Array | Float32Array;
  /** One scale per 32-element block, row-major over [rows, cols / 32]; null for f32. */
  scales: Float32Array | null;
}

/** Elements per quantization block (along K). */
export const QUANT_BLOCK = 32;

interface IntFormat {
  /** Largest code magnitude the scale maps absmax to. */
  qmax: number;
  qmin: number;
  bits: 8 | 4;
}

const INT_FORMATS: Record<'q8' | 'q4', IntFormat> = {
  q8: { qmax: 127, qmin: -127, bits: 8 },
  q4: { qmax: 7, qmin: -8, bits: 4 },
};

/**
 * Rounds half away from zero (2.5 → 3, -2.5 → -3). `Math.round` alone rounds halves toward +∞
 * (-2.5 → -2), so it is applied to the magnitude only; it is exact, unlike `floor(x + 0.5)`.
 */
export function roundHalfAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

function checkShape(rows: number, cols: number, format: QuantFormat): void {
  if (!Number.isInteger(rows) || rows <= 0 || !Number.isInteger(cols) || cols <= 0) {
    throw new Error(`quant: rows and cols must be positive integers, got rows=${rows}, cols=${cols}`);
  }
  if (format !== 'f32' && cols % QUANT_BLOCK !== 0) {
    throw new Error(`quant: ${format} needs K (cols, the input dimension) to be a multiple of ${QUANT_BLOCK}, got K=${cols}`);
  }
}

/**
 * Quantizes a row-major f32 weight matrix [rows, cols]. For 'f32' the returned `data` is `w`
 * itself (not a copy). q8/q4 need `cols` to be a multiple of 32 and all values finite.
 */
export function quantize(w: Float32Array, rows: number, cols: number, format: QuantFormat): QuantizedMatrix {
  checkShape(rows, cols, format);
  if (w.length !== rows * cols) {
    throw new Error(`quant: weight has ${w.length} elements, expected rows*cols = ${rows}*${cols} = ${rows * cols}`);
  }
  if (format === 'f32') return { format, rows, cols, data: w, scales: null };

  const { qmax, qmin, bits } = INT_FORMATS[format];
  const perWord = 32 / bits;
  const mask = (1 << bits) - 1;
  const offset = bits === 4 ? 8 : 0; // q4 nibbles are stored unsigned (code + 8)
  const blocksPerRow = cols / QUANT_BLOCK;
  const data = new Uint32Array((rows * cols) / perWord);
  const scales = new Float32Array(rows * blocksPerRow);

  for (let n = 0; n < rows; n++) {
    for (let b = 0; b < blocksPerRow; b++) {
      const start = n * cols + b * QUANT_BLOCK;
      let absmax = 0;
      for (let i = 0; i < QUANT_BLOCK; i++) {
        const v = w[start + i];
        if (!Number.isFinite(v)) {
          throw new Error(`quant: non-finite weight ${v} at row ${n}, col ${b * QUANT_BLOCK + i}`);
        }
        absmax = Math.max(absmax, Math.abs(v));
      }
      // Codes are computed against the stored (f32-rounded) scale so dequantization matches them.
      const scale = Math.fround(absmax / qmax);
      scales[n * blocksPerRow + b] = scale;
      for (let i = 0; i < QUANT_BLOCK; i++) {
        const e = start + i; // cols is a multiple of perWord, so word = n*(K/perWord) + k/perWord
        // A zero (or subnormal-tiny) block gets code 0, which q4 still has to store as nibble 8.
        const q = scale === 0 ? 0 : Math.min(qmax, Math.max(qmin, roundHalfAway(w[e] / scale)));
        data[Math.floor(e / perWord)] |= ((q + offset) & mask) << (bits * (e % perWord));
      }
    }
  }
  return { format, rows, cols, data, scales };
}

/**
 * Expands a quantized matrix back to row-major f32 [rows, cols]: code * scale, rounded once to f32.
 * For 'f32' returns `q.data` itself (not a copy).
 */
export function dequantize(q: QuantizedMatrix): Float32Array {
  const { format, rows, cols } = q;
  checkShape(rows, cols, format);
  if (format === 'f32') {
    if (!(q.data instanceof Float32Array) || q.data.length !== rows * cols) {
      throw new Error(`quant: f32 matrix data must be a Float32Array of ${rows * cols} elements`);
    }
    return q.data;
  }

  const { bits } = INT_FORMATS[format];
  const perWord = 32 / bits;
  const blocksPerRow = cols / QUANT_BLOCK;
  const { data, scales } = q;
  if (!(data instanceof Uint32Array) || data.length !== (rows * cols) / perWord) {
    throw new Error(`quant: ${format} matrix data must be a Uint32Array of ${(rows * cols) / perWord} words`);
  }
  if (scales === null || scales.length !== rows * blocksPerRow) {
    throw new Error(`quant: ${format} matrix needs ${rows * blocksPerRow} scales`);
  }

  const out = new Float32Array(rows * cols);
  for (let e = 0; e < rows * cols; e++) {
    const word = data[Math.floor(e / perWord)] >>> (bits * (e % perWord));
    // q8: sign-extend the low byte; q4: unsigned nibble minus 8.
    const code = bits === 8 ? (word << 24) >> 24 : (word & 0xf) - 8;
    out[e] = code * scales[Math.floor(e / QUANT_BLOCK)]; // blocks tile each row, so block = e / 32
  }
  return out;
}

/** Bytes a [rows, cols] matrix takes on the GPU in `format`: packed codes plus f32 scales. */
export function quantizedBytes(rows: number, cols: number, format: QuantFormat): number {
  checkShape(rows, cols, format);
  if (format === 'f32') return rows * cols * 4;
  const codeBytes = (rows * cols * INT_FORMATS[format].bits) / 8;
  const scaleBytes = (rows * cols * 4) / QUANT_BLOCK;
  return codeBytes + scaleBytes;
}
