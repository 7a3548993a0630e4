// Linear layer forward, the split-K variant with a subgroup reduction (the tuner's 'subgroup'
// tile, where the adapter has `subgroups`): out (T,N) = beta*out + alpha * (x (T,K) @ W(N,K)^T
// + s * u (T,r) @ B(N,r)^T), W f32/q8/q4 (qweight.wgsl `load_w4`) or a LoRA factor, the adapter's
// r k split over the threads like K (matmul_common.wgsl `lora`).
//
// For outputs too few to fill a GPU with one thread each (T x N small, K long: LoRA's
// x A^T, or short sequences), a workgroup of WG threads owns one tile of TM rows x 4*TN4
// columns and splits K between its threads: thread l sums k4 = l, l + WG, ... of every output
// of the tile. `subgroupAdd` then sums the threads of each subgroup; each subgroup's first
// thread puts its sums in workgroup memory at its own invocation index (slots start at zero,
// so the others stay zero whatever the subgroup size and layout), and after one barrier the
// tile's outputs are summed over the slots in index order: deterministic on a given adapter.
//
// Rows/columns past T/N are clamped on load and skipped on store; K must be a multiple of 4
// (32 for quantized weights).
//
// CPU reference: test/reference/cpu-ops.ts matmulRef (quantized W: on the dequantized weight).
// Test: test/gpu/kernels.test.ts.

enable subgroups;

const WG: u32 = {{WG}}u;
const TILE: u32 = {{TM}}u * {{TN4}}u;

//#include matmul_common io

{{WEIGHT}}

var<workgroup> sums: array<vec4<f32>, WG * TILE>; // [slot][tile entry]

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
  let t0 = wid.y * {{TM}}u;
  let n0 = wid.x * {{TN4}}u * 4u;
  let K4 = p.K / 4u;
//#for i in TM
  let xr{i} = min(t0 + {i}u, p.T - 1u) * K4;
//#for j in TN4
  var acc{i}_{j} = vec4<f32>(0.0);
//#end
//#end
//#include matmul_common columns
  for (var k4 = li; k4 < K4; k4 += WG) {
//#include matmul_common fma
  }
  for (var k4 = li; k4 < p.r / 4u; k4 += WG) {
//#include matmul_common lora
  }
  // Every thread reaches the subgroup sums (uniform control flow), the first lane stores them.
//#for i in TM
//#for j in TN4
  let s{i}_{j} = subgroupAdd(acc{i}_{j});
  if (lane == 0u) { sums[li * TILE + {i}u * {{TN4}}u + {j}u] = s{i}_{j}; }
//#end
//#end
  workgroupBarrier();
  if (li >= TILE) { return; }
  var v = vec4<f32>(0.0);
  for (var s = 0u; s < WG; s++) { v += sums[s * TILE + li]; }
  store4(t0 + li / {{TN4}}u, n0 + (li % {{TN4}}u) * 4u, v);
}
