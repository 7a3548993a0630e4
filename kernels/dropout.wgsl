// Inverted dropout for the LoRA branch input: out = beta*out + mask * x / (1 - rate), elementwise
// over (T,K). The mask is a hash of (seed, element index), so the backward pass regenerates exactly
// the forward's mask from the seed instead of storing it, and a run is reproducible from its seed.
// Used forward (x -> dropout(x), beta 0) and backward (dL/dx += mask * g / (1 - rate), beta 1).
// The seed is mixed here from the seed of the token's sequence (binding 3, written once per pass)
// and the (layer, projection) salt in the uniforms, so the uniforms hold no per-step value and are
// cached for the run (src/engine/lora-linear.ts dropoutSeed is the CPU twin of `mask_seed`).
// In a packed pass (several sequences end to end) each token carries its sequence's seed and its
// position within it, and the element index hashed is the one it has in a pass of its own
// (position * K + column): every sequence gets exactly the mask it would get alone.
//
// CPU reference: test/reference/cpu-backward.ts dropoutRef (mask: dropoutMaskRef, hash: dropoutHashRef).
// Test: test/gpu/kernels-backward.test.ts.

struct Params { n: u32, salt: u32, rate: f32, beta: f32, width: u32 } // width: K, the elements of one token
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> token_seed: array<vec2<u32>>; // per token: its sequence's seed, its position in it

// The mask, also spliced into matmul_dx.wgsl (`//#include dropout mask`, its Params with `salt` and
// `rate` too), which applies it to the LoRA branch's input gradient in its tile.
//#section mask
/// The mask's seed: the sequence's seed xor the salt, through half of the lowbias32 finalizer.
fn mask_seed(seq_seed: u32) -> u32 {
  var h = seq_seed ^ p.salt;
  h = (h ^ (h >> 16u)) * 0x7feb352du;
  return h ^ (h >> 15u);
}

/// A well-mixed 32-bit hash (lowbias32 finalizer) of the element index and the seed.
fn hash(i: u32, seed: u32) -> u32 {
  var h = i ^ (seed * 0x9e3779b9u);
  h ^= h >> 16u; h *= 0x7feb352du;
  h ^= h >> 15u; h *= 0x846ca68bu;
  h ^= h >> 16u;
  return h;
}

/// keep probability 1 - rate: the element survives when its hash, as a fraction of 2^32, is >= rate.
fn keep(i: u32, seed: u32) -> bool {
  return f32(hash(i, seed) >> 8u) * (1.0 / 16777216.0) >= p.rate;
}
//#end

// grid: (T folded past 65535 into y): workgroup t takes token t's row, thread l its columns l, l+64, ...
// No division (it cost as much as the hash), the token's seed read once a thread, and neighbouring
// threads read neighbouring floats.
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = wg.x + wg.y * 65535u;
  if (t * p.width >= p.n) { return; }
  let tok = token_seed[t];
  let seed = mask_seed(tok.x);
  let scale = 1.0 / (1.0 - p.rate);
  let cols = min(p.width, p.n - t * p.width); // a last row cut short by n
  for (var c = lid.x; c < cols; c += 64u) {
    let i = t * p.width + c;
    var v = select(0.0, x[i] * scale, keep(tok.y * p.width + c, seed));
    if (p.beta != 0.0) { v += p.beta * out[i]; }
    out[i] = v;
  }
}
