// harmonic.wgsl: DDSP's harmonic synthesizer (a bank of K harmonic sine oscillators),
// driven by pycore/ops/ddsp.py. Three passes per block of F frames:
//
//   frame_amps   per frame row: f0 and the K harmonic amplitudes
//                A_k = amplitude * d_k / sum_j d_j, where d_k = 0 for k * f0 >= nyquist
//                (ddsp's normalize_harmonics with remove_above_nyquist; a sum of 0
//                divides by 1e-7 like ddsp's safe_divide). Non-finite or negative
//                controls count as 0 (silence, never NaN).
//   increments   per sample: f0 interpolated linearly between frames, divided by the
//                sample rate: the phase increment in cycles, as two float32 lines hi + lo
//                ([2, F * hop]) for pycore.ops.scan.phase_cumsum (see Numerics).
//   oscillators  per sample: sum_k a_k(n) * sin(2 pi * frac(k * phase(n))), where phase is
//                the sum of the two scanned lines (modulo 1) and a_k is
//                A_k upsampled by ddsp's 'window' method (overlapping Hann windows:
//                a = A_prev * (1 - w[j]) + A_cur * w[j], w[j] = sin^2(pi j / 2 hop)) and
//                harmonics with k * f0(n) >= nyquist are dropped sample by sample, as
//                ddsp's oscillator_bank does.
//
// Streaming: the block's rows are [previous frame, frame 0, .., frame F - 1]; sample
// j of frame f interpolates between row f (the frame before) and row f + 1. So the output
// lags ddsp's offline rendering by exactly one hop (ddsp interpolates frame f towards
// f + 1, which needs the future), and consecutive blocks join seamlessly.
//
// Layouts (row-major, float32):
//   ctrl   [F, stride]     controls: f0 (Hz), amplitude, K harmonic weights, (noise ...)
//   prev   [stride]        the frame before this block (zeros at the start)
//   rows   [F + 1, K + 1]  frame_amps' output: f0, A_1 .. A_K per row
//   phase  [2, F * hop]    the two fundamental phase lines in cycles, [0, 1) (phase_cumsum)
//   win    [hop]           w[j] = 0.5 - 0.5 cos(pi j / hop), computed in float64 on the host
//   out    frame_amps: rows; increments: [2, F * hop]; oscillators: audio [F * hop]
// Workgroup: WG invocations, one row (frame_amps) or one sample each; 1-D grid folded
// by the runtime (wg_linear) and bounds-checked.
//
// Numerics. Frequency: f0 / sr rounded to float32 is off by up to 2^-24 relative, which
// a steady tone turns into a steady phase drift (measured 1e-3 cycles of the fundamental
// after 60 s at 48 kHz against a float64 oscillator; an hour would be 0.06). So the
// increment is split into hi = f32(f0 * (1 / sr)) and lo = (f0 - hi * sr) / sr. The residual
// f0 - hi * sr is computed exactly in float32: hi is cut into three 8-bit slices of its
// significand, each slice times sr is exact (sr's odd part < 2^16: every common rate),
// and each partial difference is exactly representable (a small multiple of the finer
// ulp involved), so no step rounds; fusing a product into an fma cannot change an exact
// result either (checked exhaustively-random against float64 for 8 ... 96 kHz).
// hi + lo then equals f0 / sr to ~1e-11 relative. phase_cumsum sums each line exactly
// in 64-bit fixed point. Phase: the two phases (float32 in [0, 1), <= 2^-25 cycles from
// their exact sums each) become 32-bit fractions of a cycle (exact but for bits below
// 2^-32) and are added modulo 2^32. The phase of harmonic k is frac(k * phase): DDSP's
// per-harmonic cumulative sum of k * f0 is the same number modulo one cycle, but summed
// once, so harmonics never drift apart; k * u wraps modulo 2^32 = one cycle exactly, so
// harmonic k errs by k times the fundamental (<= 60 * 6e-8 = 3.6e-6 cycles for k = 60)
// plus the 2^-25-cycle rounding of k * u to float32. sin is not WGSL's builtin (whose
// accuracy WGSL only bounds by 2^-11 absolute): sin_cycles folds the phase to a quarter
// cycle exactly and evaluates the odd Taylor polynomial of degree 11 (truncation error
// <= (pi/2)^13 / 13! = 5.7e-8), so every adapter gives the same ~1e-7. Amplitudes and the
// sum over harmonics accumulate in float32.

struct Params {
    frames: u32,     // F
    harmonics: u32,  // K
    stride: u32,     // values per controls row
    hop: u32,        // samples per frame
    n: u32,          // samples in the block: F * hop
    nyquist: f32,    // sample_rate / 2
    sr: f32,         // sample_rate (an integer)
    inv_sr: f32,     // 1 / sample_rate
    inv_hop: f32,    // 1 / hop
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ctrl: array<f32>;
@group(0) @binding(2) var<storage, read> prev: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<f32>;
@group(0) @binding(4) var<storage, read> phase: array<f32>;
@group(0) @binding(5) var<storage, read> win: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

override WG: u32 = 64u;

// x if it is a finite number >= 0, else 0 (by the bits: WGSL may assume no NaN or inf).
fn clean(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    if ((bits & 0x7f800000u) == 0x7f800000u || (bits >> 31u) == 1u) {
        return 0.0;
    }
    return x;
}

// Control c of row r: row 0 is the previous frame, row r > 0 is frame r - 1 of the block.
fn control(r: u32, c: u32) -> f32 {
    if (r == 0u) {
        return clean(prev[c]);
    }
    return clean(ctrl[(r - 1u) * p.stride + c]);
}

@compute @workgroup_size(WG)
fn frame_amps(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = wg_linear(wid, nwg) * WG + lid.x;
    if (r > p.frames) {
        return;
    }
    let f0 = control(r, 0u);
    var total = 0.0;
    for (var k = 1u; k <= p.harmonics; k++) {
        if (f32(k) * f0 < p.nyquist) {
            total += control(r, 1u + k);
        }
    }
    let scale = control(r, 1u) / select(total, 1e-7, total == 0.0);
    let base = r * (p.harmonics + 1u);
    out[base] = f0;
    for (var k = 1u; k <= p.harmonics; k++) {
        var a = 0.0;
        if (f32(k) * f0 < p.nyquist) {
            a = control(r, 1u + k) * scale;
        }
        out[base + k] = a;
    }
}

// f0 at sample n of the block: linear between rows f and f + 1 (f = n / hop).
fn f0_at(n: u32) -> f32 {
    let f = n / p.hop;
    let t = f32(n - f * p.hop) * p.inv_hop;
    let a = rows[f * (p.harmonics + 1u)];
    let b = rows[(f + 1u) * (p.harmonics + 1u)];
    return a + t * (b - a);
}

// f0 / sr as hi + lo: hi = f0 * (1 / sr) in float32, lo from the exact residual
// f0 - hi * sr (see Numerics: three 8-bit slices of hi, each product exact).
fn increment(f0: f32) -> vec2<f32> {
    let hi = f0 * p.inv_sr;
    let bits = bitcast<u32>(hi);
    let top = bitcast<f32>(bits & 0xffff0000u);           // 8 leading significand bits
    let top2 = bitcast<f32>(bits & 0xffffff00u);          // 16 leading bits
    var r = f0 - top * p.sr;
    r = r - (top2 - top) * p.sr;
    r = r - (hi - top2) * p.sr;
    return vec2<f32>(hi, r * p.inv_sr);
}

@compute @workgroup_size(WG)
fn increments(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = wg_linear(wid, nwg) * WG + lid.x;
    if (n < p.n) {
        let inc = increment(f0_at(n));
        out[n] = inc.x;
        out[p.n + n] = inc.y;
    }
}

// sin(2 pi x) for x in [-1/2, 1/2] cycles. Folding to [-1/4, 1/4] is exact (Sterbenz:
// 1/2 - x for x in [1/4, 1/2]); then the odd Taylor polynomial of degree 11 in 2 pi x.
fn sin_cycles(x0: f32) -> f32 {
    var x = select(x0, 0.5 - x0, x0 > 0.25);
    x = select(x, -0.5 - x0, x0 < -0.25);
    let y = 6.283185307179586 * x;
    let y2 = y * y;
    let s = -1.0 / 6.0 + y2 * (1.0 / 120.0 + y2 * (-1.0 / 5040.0 + y2 * (1.0 / 362880.0 - y2 / 39916800.0)));
    return y + y * y2 * s;
}

@compute @workgroup_size(WG)
fn oscillators(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = wg_linear(wid, nwg) * WG + lid.x;
    if (n >= p.n) {
        return;
    }
    let f = n / p.hop;
    let f0 = f0_at(n);
    let wb = win[n - f * p.hop];
    let wa = 1.0 - wb;
    let ra = f * (p.harmonics + 1u);            // row of the frame before
    let rb = ra + p.harmonics + 1u;             // row of this frame
    // phase = hi line + lo line, as a 32-bit fraction of a cycle (wrapping add: modulo 1)
    let u = u32(phase[n] * 4294967296.0) + u32(phase[p.n + n] * 4294967296.0);
    var uk = 0u;
    var acc = 0.0;
    for (var k = 1u; k <= p.harmonics; k++) {
        if (f32(k) * f0 >= p.nyquist) {
            break;                              // and every harmonic above it
        }
        uk += u;                                // k * u modulo one cycle, exactly
        let x = f32(bitcast<i32>(uk)) * 2.3283064365386963e-10;   // in [-1/2, 1/2)
        acc += (wa * rows[ra + k] + wb * rows[rb + k]) * sin_cycles(x);
    }
    out[n] = acc;
}
