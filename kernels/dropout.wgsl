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
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
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

// grid: (T/4 folded past 65535 into y): workgroup w takes tokens 4w..4w+3, 16 threads a token, thread l
// its vec4 columns l, l+16, ... (width a multiple of 4: a weight's). No division (it cost as much as the
// hash), the token's seed read once a thread, and neighbouring threads read neighbouring vec4s. A
// toy-math call (T 720, 128 or 384 wide) took 0.9-1.1 ms with a workgroup a token and an element a
// thread, 0.74-0.84 ms this way.
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let t = (wg.x + wg.y * 65535u) * 4u + lid.x / 16u;
  if (t * p.width >= p.n) { return; }
  let tok = token_seed[t];
  let seed = mask_seed(tok.x);
  let scale = 1.0 / (1.0 - p.rate);
  let cols4 = min(p.width, p.n - t * p.width) / 4u; // a last row cut short by n
  for (var c4 = lid.x % 16u; c4 < cols4; c4 += 16u) {
    let i4 = t * (p.width / 4u) + c4;
    let e = tok.y * p.width + c4 * 4u;
    let kept = vec4<bool>(keep(e, seed), keep(e + 1u, seed), keep(e + 2u, seed), keep(e + 3u, seed));
    var v = select(vec4<f32>(0.0), x[i4] * scale, kept);
    if (p.beta != 0.0) { v += p.beta * out[i4]; }
    out[i4] = v;
  }
}
