/**
 * Seeded, deterministic random numbers for reproducible fixtures, weight initialisation
 * and data shuffling.
 *
 * The generator is xoshiro128** (Blackman & Vigna, 2018): 128 bits of state, period
 * 2^128 − 1, good statistical quality, and only 32-bit integer operations, so it gives
 * the same sequence on every JavaScript engine. The state is filled from the seed with
 * splitmix32, which turns any 32-bit seed (0 included) into a well-mixed, non-zero state.
 */

/** splitmix32 step: returns the next mixed 32-bit value of a counter-based sequence. */
function splitmix32(state: { x: number }): number {
  state.x = (state.x + 0x9e3779b9) | 0;
  let z = state.x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

const TWO_POW_32 = 4294967296;

/** A seeded xoshiro128** generator. Equal seeds give equal sequences. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  /** Second value of the last Box–Muller pair, handed out by the next `normal()`. */
  private spareNormal: number | null = null;

  /** @param seed any number; it is reduced to 32 bits (`seed >>> 0`). */
  constructor(seed: number) {
    const sm = { x: seed >>> 0 };
    this.s0 = splitmix32(sm);
    this.s1 = splitmix32(sm);
    this.s2 = splitmix32(sm);
    this.s3 = splitmix32(sm);
  }

  /** The next raw 32-bit unsigned integer. */
  uint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1), with 32 bits of resolution. */
  next(): number {
    return this.uint32() / TWO_POW_32;
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /**
   * Uniform integer in [0, n). `n` must be a positive integer up to 2^32; the bias of
   * scaling a 32-bit value is below n / 2^32, negligible for the sizes used here.
   */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > TWO_POW_32) {
      throw new RangeError(`Rng.int: expected a positive integer up to 2^32, got ${n}`);
    }
    return Math.floor(this.next() * n);
  }

  /** Standard normal N(0, 1) by the Box–Muller transform (values come in pairs; the spare is cached). */
  normal(): number {
    if (this.spareNormal !== null) {
      const z = this.spareNormal;
      this.spareNormal = null;
      return z;
    }
    const u1 = 1 - this.next(); // (0, 1]: log(u1) is finite
    const u2 = this.next();
    const r = Math.sqrt(-2 * Math.log(u1));
    const theta = 2 * Math.PI * u2;
    this.spareNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
}

/** 32-bit rotate left. */
function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Fills `arr` with independent N(mean, std²) samples drawn from `rng`; returns `arr`. */
export function fillNormal(arr: Float32Array, std: number, rng: Rng, mean = 0): Float32Array {
  for (let i = 0; i < arr.length; i++) arr[i] = mean + std * rng.normal();
  return arr;
}
