// elementwise.wgsl: binary ops (add, sub, mul), scalar ops, copy and transpose.
//
// Entry points (all share the bindings and Params below; each ignores what it does
// not use, the caller binds `b = a` and passes neutral values for unused fields):
//   binary         out[i] = a[i] OP b[i % nb]    b is a's shape, a's trailing dims, or 1 value
//   binary_scalar  out[i] = a[i] OP s
//   copy           out[i] = a[i]
//   permute        out = a permuted: out index -> (coordinates in out's shape d0..d5)
//                  -> a offset = sum(coordinate_k * t_k), where t_k is a's stride of the
//                  input dim that became output dim k (rank <= 6, padded with d=1, t=0)
//
// Layout: contiguous row-major f32 tensors; `b` may hold f16 weights (alias W).
// Workgroup: 256 invocations, one element each, 1-D grid (folded by the runtime,
// hence wg_linear + bounds check). Numerics: plain f32 arithmetic, exact for copy
// and transpose; one rounding per add/sub/mul.

alias W = f32;

// OP for binary / binary_scalar: 0 add, 1 sub, 2 mul.
override OP: u32 = 0u;

struct Params {
    n: u32,     // number of output elements
    nb: u32,    // number of elements of b (binary)
    s: f32,     // the scalar (binary_scalar)
    d0: u32, d1: u32, d2: u32, d3: u32, d4: u32, d5: u32,   // output shape (transpose)
    t0: u32, t1: u32, t2: u32, t3: u32, t4: u32, t5: u32,   // matching input strides
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<W>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG = 256u;

fn apply(x: f32, y: f32) -> f32 {
    switch OP {
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        default: { return x + y; }
    }
}

fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return wg_linear(wid, nwg) * WG + lid;
}

@compute @workgroup_size(WG)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = apply(a[i], f32(b[i % p.nb]));
}

@compute @workgroup_size(WG)
fn binary_scalar(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = apply(a[i], p.s);
}

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = a[i];
}

@compute @workgroup_size(WG)
fn permute(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    // Peel output coordinates off from the innermost dim outwards.
    var rest = i;
    var src = 0u;
    src += (rest % p.d5) * p.t5; rest /= p.d5;
    src += (rest % p.d4) * p.t4; rest /= p.d4;
    src += (rest % p.d3) * p.t3; rest /= p.d3;
    src += (rest % p.d2) * p.t2; rest /= p.d2;
    src += (rest % p.d1) * p.t1; rest /= p.d1;
    src += rest * p.t0;
    out[i] = a[src];
}
