// elementwise.wgsl: binary ops (add, sub, mul), scalar ops, copy, transpose, pad/crop,
// concatenation and per-channel affine maps.
//
// Entry points (all share the bindings and Params below; each ignores what it does
// not use, the caller binds `b = a` and passes neutral values for unused fields):
//   binary         out[i] = a[i] OP b[i % nb]    b is a's shape, a's trailing dims, or 1 value
//   binary_scalar  out[i] = a[i] OP s
//   copy           out[i] = a[i]
//   permute        out = a permuted: out index -> (coordinates in out's shape d0..d5)
//                  -> a offset = sum(coordinate_k * t_k), where t_k is a's stride of the
//                  input dim that became output dim k (rank <= 6, padded with d=1, t=0)
//   pad            out (shape d0..d5) = a (shape e0..e5) shifted by o0..o5: out coordinate
//                  k reads a coordinate k - o_k, or the constant s where that lies outside
//                  a (o_k > 0 pads before, o_k < 0 crops). One invocation per out element.
//   place          the scatter twin of pad: writes a (shape e) into the window of out
//                  (shape d) that starts at o (all o_k >= 0, the window inside out); the
//                  rest of out is left as it is. concat = one place per input.
//   channel_affine ACT(a * b[ch] + c[ch]) per channel of a 4-D a [N, C, H, W]: a folded
//                  inference BatchNorm (scale b, shift c) with an optional activation
//                  ACT (0 none, 1 relu, 2 leaky_relu with slope s), fused with zero
//                  padding / cropping of H and W and with writing into a channel slice
//                  of a larger out (a U-Net's concatenation). See the entry point.
//
// Layout: contiguous row-major f32 tensors; `b` and `c` may hold f16 weights (alias W).
// Workgroup: 256 invocations, one element each, 1-D grid (folded by the runtime,
// hence wg_linear + bounds check). Numerics: plain f32 arithmetic, exact for copy,
// transpose, pad and place; one rounding per add/sub/mul; channel_affine rounds once
// or twice (x * scale + shift; the driver may fuse it into one multiply-add).

alias W = f32;

// OP for binary / binary_scalar: 0 add, 1 sub, 2 mul.
override OP: u32 = 0u;
// ACT for channel_affine: 0 none, 1 relu, 2 leaky_relu (slope p.s).
override ACT: u32 = 0u;

struct Params {
    n: u32,     // invocations: output elements (place: a's; channel_affine: rows x ceil(W / 4))
    nb: u32,    // elements of b (binary); channels of a (channel_affine)
    s: f32,     // the scalar (binary_scalar); pad value (pad); slope (channel_affine)
    d0: u32, d1: u32, d2: u32, d3: u32, d4: u32, d5: u32,   // out's shape
    t0: u32, t1: u32, t2: u32, t3: u32, t4: u32, t5: u32,   // input strides (transpose)
    e0: u32, e1: u32, e2: u32, e3: u32, e4: u32, e5: u32,   // a's shape (pad, place, channel_affine)
    o0: i32, o1: i32, o2: i32, o3: i32, o4: i32, o5: i32,   // a's origin in out (idem)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<W>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> c: array<W>;

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

// One axis of pad / place, walked from the innermost axis outwards: `rest` holds the
// index not yet split, `idx` the flat index built so far in the other tensor, `step` that
// tensor's stride for this axis, `inside` whether every coordinate so far was in range.
struct Walk { rest: u32, idx: u32, step: u32, inside: bool }

// pad: split an out index by out's shape d; a's coordinate = out's - o, a's shape e.
fn pad_axis(w: Walk, d: u32, e: u32, o: i32) -> Walk {
    let k = i32(w.rest % d) - o;
    return Walk(w.rest / d, w.idx + u32(max(k, 0)) * w.step, w.step * e,
                w.inside && k >= 0 && k < i32(e));
}

@compute @workgroup_size(WG)
fn pad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    var w = Walk(i, 0u, 1u, true);
    w = pad_axis(w, p.d5, p.e5, p.o5);
    w = pad_axis(w, p.d4, p.e4, p.o4);
    w = pad_axis(w, p.d3, p.e3, p.o3);
    w = pad_axis(w, p.d2, p.e2, p.o2);
    w = pad_axis(w, p.d1, p.e1, p.o1);
    w = pad_axis(w, p.d0, p.e0, p.o0);
    out[i] = select(p.s, a[w.idx], w.inside);
}

// place: split an index of a by a's shape e; out's coordinate = a's + o, out's shape d.
fn place_axis(w: Walk, e: u32, d: u32, o: i32) -> Walk {
    return Walk(w.rest / e, w.idx + (w.rest % e + u32(o)) * w.step, w.step * d, true);
}

@compute @workgroup_size(WG)
fn place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    var w = Walk(i, 0u, 1u, true);
    w = place_axis(w, p.e5, p.d5, p.o5);
    w = place_axis(w, p.e4, p.d4, p.o4);
    w = place_axis(w, p.e3, p.d3, p.o3);
    w = place_axis(w, p.e2, p.d2, p.o2);
    w = place_axis(w, p.e1, p.d1, p.o1);
    w = place_axis(w, p.e0, p.d0, p.o0);
    out[w.idx] = a[i];
}

// channel_affine: 4-D. Writes the elements (n, c, y, x) < (N, C, Ho, Wo) with N = d0,
// C = nb (a's channels), Ho = d2, Wo = d3 of out [N, d1, Ho, Wo] from a [N, C, e2, e3]:
// out[n, c + o1, y, x] = ACT(v * b[c] + c[c]) (AFFINE = 1) or ACT(v) (AFFINE = 0) with
// v = a[n, c, y - o2, x - o3], and 0 where that lies outside a (zero padding applied
// after the activation; negative o2, o3 and a smaller Ho, Wo crop). One invocation per
// 4 consecutive columns of a row (n = N * C * Ho * ceil(Wo / 4) invocations): the index
// arithmetic is shared by 4 elements, 2.2x faster than one element each on lavapipe.
override AFFINE: u32 = 1u;

@compute @workgroup_size(WG)
fn channel_affine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= p.n) { return; }
    let wq = (p.d3 + 3u) / 4u;      // groups of 4 columns per row
    let x0 = (i % wq) * 4u;
    let y = (i / wq) % p.d2;
    let nc = i / (wq * p.d2);       // n * C + c
    let ch = nc % p.nb;
    let n = nc / p.nb;
    let ya = i32(y) - p.o2;
    let row_ok = ya >= 0 && ya < i32(p.e2);
    let src = (nc * p.e2 + u32(max(ya, 0))) * p.e3;
    let dst = ((n * p.d1 + ch + u32(p.o1)) * p.d2 + y) * p.d3;
    var sc = 1.0;
    var sh = 0.0;
    if (AFFINE == 1u) {
        sc = f32(b[ch]);
        sh = f32(c[ch]);
    }
    for (var x = x0; x < min(x0 + 4u, p.d3); x++) {
        let xa = i32(x) - p.o3;
        var v = 0.0;
        if (row_ok && xa >= 0 && xa < i32(p.e3)) {
            v = a[src + u32(xa)];
            if (AFFINE == 1u) {
                v = v * sc + sh;
            }
            switch ACT {
                case 1u: { v = max(v, 0.0); }
                case 2u: { v = select(v * p.s, v, v >= 0.0); }
                default: {}
            }
        }
        out[dst + x] = v;
    }
}
