// pool.wgsl: 2-D max pooling, with an optional per-channel affine map applied to every
// input before the max.
//
//   out[n, c, i, j] = max over u < kh, v < kw of  f(x[n, c, i * sh + u, j * sw + v])
//   f(v) = v * scale[c] + shift[c]   (AFFINE = 1)   or   v   (AFFINE = 0)
//
// The affine map is an inference BatchNorm that sits between an activation and the
// pool (CREPE: max_pool(batch_norm(relu(conv)))). It must be applied before the max,
// not after: a negative scale turns the max into a min.
//
// Layout: x [N, C, H, W] and out [N, C, OH, OW], contiguous row-major f32; scale and
// shift [C] (f32, or f16 storage with `alias S = f16`), read only when AFFINE = 1.
// No padding and floor mode (PyTorch's defaults): OH = (H - kh) / sh + 1, so every
// window lies inside x.
// Workgroup: WG invocations in 1-D on a folded 1-D grid (wg_linear + bounds check); each
// invocation makes a run of p.run consecutive output elements (8, fewer for windows so
// large that 8 of them would pass lavapipe's loop budget). The run's indices come from
// one division chain, then advance by counting: on CPU drivers (lavapipe, SwiftShader)
// an integer division by a runtime value is scalar and slow (about 25 cycles a lane),
// and four of them per output were most of this kernel's time (CREPE's first pool:
// 32 k outputs, 1.0 -> 0.2 ms of CPU on lavapipe).
// Numerics: f(v) rounds once or twice in f32 (multiply, add; the driver may fuse them);
// the max itself is exact.

alias S = f32;

override WG: u32 = 64u;
override AFFINE: u32 = 0u;

struct Params {
    n: u32,          // output elements N * C * OH * OW
    c: u32,          // channels
    h: u32,          // input height and width
    w: u32,
    oh: u32,         // output height and width
    ow: u32,
    kh: u32,         // window
    kw: u32,
    sh: u32,         // stride
    sw: u32,
    run: u32,        // output elements per invocation
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> scale: array<S>;
@group(0) @binding(3) var<storage, read> shift: array<S>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn max_pool2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let run = p.run;
    let first = (wg_linear(wid, nwg) * WG + lid) * run;
    let n = p.n;
    if (first >= n) { return; }
    // the loops' bounds as values (Params may live in storage, which is reloaded per use)
    let c = p.c;
    let oh = p.oh;
    let ow = p.ow;
    let kh = p.kh;
    let kw = p.kw;
    let w = p.w;
    let row_step = p.sh * w;              // input offset from output row i to i + 1
    let plane_size = p.h * w;
    var j = first % ow;
    var i = (first / ow) % oh;
    var plane = first / (ow * oh);        // n * C + c
    var ch = plane % c;
    for (var o = first; o < min(first + run, n); o++) {
        var a = 1.0;
        var b = 0.0;
        if (AFFINE == 1u) {
            a = f32(scale[ch]);
            b = f32(shift[ch]);
        }
        let base = plane * plane_size + i * row_step + j * p.sw;
        var best = x[base] * a + b;
        for (var u = 0u; u < kh; u++) {
            for (var v = 0u; v < kw; v++) {
                best = max(best, x[base + u * w + v] * a + b);
            }
        }
        out[o] = best;
        // next output: (plane, i, j) counted up without dividing
        j++;
        if (j == ow) {
            j = 0u;
            i++;
            if (i == oh) {
                i = 0u;
                plane++;
                ch++;
                if (ch == c) { ch = 0u; }
            }
        }
    }
}
