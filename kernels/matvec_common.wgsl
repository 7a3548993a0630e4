// Pieces shared by the three entry points of kernels/matvec.wgsl (one-row products, decode), spliced
// in with `//#include matvec_common SECTION` (src/engine/kernels.ts):
//   columns  the four output columns of each of the TN4 column groups from the first `n0`, clamped
//            to N for loading, and one vec4 accumulator per group;
//   block    one weight block `b` (BK4 vec4 of x; 32 k for q8/q4): the columns' dots with the block's
//            codes (`codes4`, kernels/qweight.wgsl's `*_dot` sections), then times their scales.
//
// CPU reference: test/reference/cpu-ops.ts matmulRef. Test: test/gpu/matvec.test.ts (every variant).

//#section columns
//#for j in TN4
  let c{j} = n0 + {j}u * 4u;
  let c{j}_0 = min(c{j}, p.N - 1u);
  let c{j}_1 = min(c{j} + 1u, p.N - 1u);
  let c{j}_2 = min(c{j} + 2u, p.N - 1u);
  let c{j}_3 = min(c{j} + 3u, p.N - 1u);
  var acc{j} = vec4<f32>(0.0);
//#end
//#end

//#section block
//#for j in TN4
    var d{j} = vec4<f32>(0.0);
//#end
//#for i in BK4
    let x{i} = x[b * BK4 + {i}u];
//#for j in TN4
    d{j} += x{i} * mat4x4<f32>(codes4(c{j}_0, b * BK4 + {i}u), codes4(c{j}_1, b * BK4 + {i}u),
                               codes4(c{j}_2, b * BK4 + {i}u), codes4(c{j}_3, b * BK4 + {i}u));
//#end
//#end
//#for j in TN4
    acc{j} += d{j} * vec4<f32>(block_scale(c{j}_0, b), block_scale(c{j}_1, b), block_scale(c{j}_2, b), block_scale(c{j}_3, b));
//#end
//#end
