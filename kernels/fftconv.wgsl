// fftconv.wgsl: streaming FFT convolution, the parts between pycore.ops.spectral's stft
// and istft (driven by pycore/ops/ddsp.py):
//
//   mac        Y[b, t] = s_b * sum_{p < P} X(t + P - 1 - p)[b] * H(p, t)[b]: the spectrum
//              of output block t of a uniformly partitioned convolution. X(j) is frame j
//              of the history (the P - 1 frames before this block, j < P - 1) followed
//              by the K new frames; H(p, t) = h[h_off + b * h_frames + p + t * hstride]:
//              a fixed filter of P partitions (hstride 0: a long reverb) or one filter
//              per block (P = 1, hstride 1: a time-varying FIR). s_b = (-1)^b with flip
//              (a circular shift by half the FFT: the filter's frames are placed half a
//              frame late by a centred stft window), else 1.
//   fdl_shift  the history for the next block: the last P - 1 frames of [history, new].
//   ola_carry  overlap-add across blocks: out[pad + j] = v(start + j) for j < count, zeros
//              in the pad values before and after, where v(i) = base[base_off + i] (with
//              has_base) + tail[i] + ola[i - delay], each term 0 outside its tensor. Run
//              once with start 0, count n for this block's samples and once with start n,
//              count tail_len (no base) for the tail that later blocks receive. delay > 0
//              places this block's overlap-add later (the group-delay crop of ddsp's
//              fft_convolve, relative to the synth's one-hop latency).
//
// Layouts (row-major, float32; bindings are flat f32 arrays, complex values as pairs):
// spectra [bins, frames, 2] (re, im), as stft writes them for one signal; h may be a later
// part of a bigger stft output (h_off complex values in); signals [samples].
// Workgroup: WG invocations, one output value each (a complex bin for mac and fdl_shift),
// 1-D grid folded by the runtime (wg_linear) and bounds-checked.
// Numerics: complex products and sums in float32, in a fixed order (p ascending), so a
// block's spectrum does not depend on how the signal was split into blocks; the relative
// error of a sum of P products is ~sqrt(P) * 2^-24 of the sum of their magnitudes.

struct Params {
    bins: u32,       // frequency bins per frame
    frames: u32,     // K new frames in this block
    hist: u32,       // P - 1 history frames
    parts: u32,      // P
    h_frames: u32,   // frames per bin row of h
    h_off: u32,      // complex offset of h inside its tensor
    hstride: u32,    // 0: fixed filter; 1: filter t for block t (P = 1)
    flip: u32,       // 1: multiply bin b by (-1)^b
    start: u32,      // ola_carry: first sample computed
    count: u32,      // ola_carry: samples computed
    pad: u32,        // ola_carry: zeros written before and after them in out
    delay: u32,      // ola_carry: shift of this block's overlap-add
    tail_len: u32,   // ola_carry: samples in tail
    ola_len: u32,    // ola_carry: samples in ola
    has_base: u32,   // ola_carry: 1 = add base[base_off + i]
    base_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;   // mac, fdl_shift: history; ola_carry: base
@group(0) @binding(2) var<storage, read> x: array<f32>;   // new frames; ola_carry: tail
@group(0) @binding(3) var<storage, read> h: array<f32>;   // filter spectra; ola_carry: ola
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

override WG: u32 = 64u;

fn cmul(u: vec2<f32>, v: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(u.x * v.x - u.y * v.y, u.x * v.y + u.y * v.x);
}

// Frame j of [history, new frames] at bin b.
fn frame(b: u32, j: u32) -> vec2<f32> {
    if (j < p.hist) {
        let k = 2u * (b * p.hist + j);
        return vec2<f32>(a[k], a[k + 1u]);
    }
    let k = 2u * (b * p.frames + j - p.hist);
    return vec2<f32>(x[k], x[k + 1u]);
}

@compute @workgroup_size(WG)
fn mac(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = wg_linear(wid, nwg) * WG + lid.x;      // (bin, block)
    if (i >= p.bins * p.frames) {
        return;
    }
    let frames = p.frames;
    let hist = p.hist;
    let parts = p.parts;
    let b = i / frames;
    let t = i - b * frames;
    let h0 = p.h_off + b * p.h_frames + t * p.hstride;
    // frame j < hist of [history, new] is a[2 (b hist + j)], a later one x[2 (b frames + j - hist)]
    // (as frame() reads them; the bounds and rows taken once: Params may live in storage)
    let a_row = 2u * b * hist;
    let x_row = 2u * (b * frames) - 2u * hist;
    var acc = vec2<f32>(0.0, 0.0);
    for (var q = 0u; q < parts; q++) {
        let k = 2u * (h0 + q);
        let j = t + parts - 1u - q;
        var v: vec2<f32>;
        if (j < hist) {
            v = vec2<f32>(a[a_row + 2u * j], a[a_row + 2u * j + 1u]);
        } else {
            v = vec2<f32>(x[x_row + 2u * j], x[x_row + 2u * j + 1u]);
        }
        acc += cmul(v, vec2<f32>(h[k], h[k + 1u]));
    }
    if (p.flip == 1u && (b & 1u) == 1u) {
        acc = -acc;
    }
    out[2u * i] = acc.x;
    out[2u * i + 1u] = acc.y;
}

@compute @workgroup_size(WG)
fn fdl_shift(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = wg_linear(wid, nwg) * WG + lid.x;      // (bin, history frame)
    if (i >= p.bins * p.hist) {
        return;
    }
    let b = i / p.hist;
    let v = frame(b, i - b * p.hist + p.frames);
    out[2u * i] = v.x;
    out[2u * i + 1u] = v.y;
}

@compute @workgroup_size(WG)
fn ola_carry(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = wg_linear(wid, nwg) * WG + lid.x;      // position in out
    if (j >= p.count + 2u * p.pad) {
        return;
    }
    var v = 0.0;
    if (j >= p.pad && j < p.pad + p.count) {
        let i = p.start + j - p.pad;
        if (p.has_base == 1u) {
            v += a[p.base_off + i];
        }
        if (i < p.tail_len) {
            v += x[i];
        }
        if (i >= p.delay && i - p.delay < p.ola_len) {
            v += h[i - p.delay];
        }
    }
    out[j] = v;
}
