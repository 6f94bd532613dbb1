// fft.wgsl: short-time Fourier transform and its inverse (torch.stft / torch.istft
// semantics), driven by pycore/ops/spectral.py.
//
// Layouts (row-major, float32):
//   signal   [B, T]                   stft input; frame t of batch b starts at padded
//                                     position t * hop (center: padded by n_fft/2 each side)
//   spectrum [B, F, frames, 2]        (re, im) last, like torch.view_as_real(torch.stft(...))
//   frames   [B, frames, n_fft]       istft: windowed inverse FFT of every frame
//   window   [win_len]                zero-padded to n_fft, centered (win_off zeros left)
//   tw       complex table (re, im)   FFT: exp(-2 pi i k / n_fft), k < n_fft / 2;
//                                     DFT: exp(-2 pi i m / n_fft), m < n_fft.
//                                     Computed in float64 on the host, uploaded as f32
//                                     (f32 sin/cos of large angles on the GPU lose digits).
//
// Power-of-two n_fft (stft_fft / istft_fft): a real FFT of n_fft points through one complex
// FFT of N = n_fft / 2 points, z[m] = x[2m] + i x[2m+1], split afterwards into the
// spectrum of the even and odd samples (X[k] = E[k] + W^k O[k]); istft runs the split
// backwards, then the inverse FFT. The N-point FFT is an in-place decimation-in-time FFT
// in workgroup memory: the frame is loaded straight into bit-reversed order, then
// log2(N) butterfly stages, two per pass (radix-4; one radix-2 pass first if log2(N) is
// odd), each pass followed by a barrier. In place rather than Stockham ping-pong, which
// needs a second buffer: n_fft = 4096 is 2048 complex = 16 KiB, exactly WebGPU's default
// workgroup memory limit (larger n_fft raise CAP where the device allows more). One
// workgroup transforms `fpw` frames at once (fpw * N = CAP complex values), so small
// n_fft keep every thread busy. Workgroup: WG threads striding over values / butterflies.
// Other n_fft (stft_dft / istft_dft): a direct DFT, one thread per output value, the
// angle index j * k mod n_fft kept exact in integers. overlap_add: one thread per output
// sample gathers the frames that cover it (no float atomics in WGSL) and divides by the
// overlap-added squared window (the envelope), like torch.istft.
//
// Numerics: float32 throughout. Each FFT stage adds ~2 roundings (2^-24) of relative
// error, so the relative L2 error is ~1e-7 (measured 1.4e-7 at n_fft = 4096 vs float64);
// the DFT fallback ~sqrt(n_fft) * 6e-8.

struct Params {
    n_fft: u32,
    half: u32,       // N = n_fft / 2 (FFT path)
    log2n: u32,      // log2(N)
    hop: u32,
    length: u32,     // stft: input samples T per batch; istft: output samples per batch
    frames: u32,
    total: u32,      // B * frames
    pad: u32,        // stft: n_fft / 2 if center else 0; istft: first kept padded position
    pad_mode: u32,   // 0 constant (zeros), 1 reflect, 2 replicate, 3 circular
    fpw: u32,        // frames per workgroup (FFT path)
    nbins: u32,      // F: n_fft / 2 + 1 (onesided) or n_fft
    win_len: u32,
    win_off: u32,
    ola_len: u32,    // istft: n_fft + hop * (frames - 1), the overlap-added length
    batch: u32,      // B
    scale: f32,      // stft: 1 or 1/sqrt(n_fft); istft: 1/n_fft or 1/sqrt(n_fft)
    raw: u32,        // overlap_add: 1 = skip the division by the envelope
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> sig: array<f32>;
@group(0) @binding(2) var<storage, read> win: array<f32>;
@group(0) @binding(3) var<storage, read> tw: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

override WG: u32 = 256u;
override CAP: u32 = 2048u;   // complex values in workgroup memory: fpw * N

var<workgroup> zre: array<f32, CAP>;
var<workgroup> zim: array<f32, CAP>;

fn cmul(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

fn conj(a: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(a.x, -a.y);
}

fn window(j: u32) -> f32 {
    if (j < p.win_off || j >= p.win_off + p.win_len) {
        return 0.0;
    }
    return win[j - p.win_off];
}

// Sample at padded position q of batch b (torch.nn.functional.pad semantics).
fn sample(b: u32, q: u32) -> f32 {
    let n = i32(p.length);
    var i = i32(q) - i32(p.pad);
    if (i < 0 || i >= n) {
        switch p.pad_mode {
            case 1u: { i = select(2 * (n - 1) - i, -i, i < 0); }   // reflect (pad < T)
            case 2u: { i = clamp(i, 0, n - 1); }                   // replicate
            case 3u: { i = ((i % n) + n) % n; }                    // circular
            default: { return 0.0; }                               // constant
        }
    }
    return sig[b * p.length + u32(i)];
}

fn bit_reverse(m: u32) -> u32 {
    if (p.log2n == 0u) {
        return 0u;
    }
    return reverseBits(m) >> (32u - p.log2n);
}

fn ld(i: u32) -> vec2<f32> {
    return vec2<f32>(zre[i], zim[i]);
}

fn st(i: u32, v: vec2<f32>) {
    zre[i] = v.x;
    zim[i] = v.y;
}

// exp(sign * 2 pi i k / n_fft) from the table (which holds sign = -1)
fn tw_dir(k: u32, sign: f32) -> vec2<f32> {
    let w = tw[k];
    return vec2<f32>(w.x, -sign * w.y);
}

// In-place decimation-in-time FFT of the fpw frames in zre/zim, which are stored one after
// the other and already in bit-reversed order. sign = -1: forward; +1: inverse
// (unnormalized). Stage s merges sub-FFTs of size h = 2^s into size 2h with butterflies
// (a, b) -> (a + w b, a - w b), w = exp(sign 2 pi i pos / 2h). Two stages run per pass
// (a radix-4 butterfly on 4 values h apart), which halves the barriers and the workgroup
// memory traffic; an odd stage count starts with one radix-2 pass.
fn fft_frames(lid: u32, sign: f32) {
    var s = 0u;
    if ((p.log2n & 1u) == 1u) {
        for (var b = lid; b < p.fpw * (p.half / 2u); b += WG) {   // h = 1: twiddle 1
            let a = ld(2u * b);
            let c = ld(2u * b + 1u);
            st(2u * b, a + c);
            st(2u * b + 1u, a - c);
        }
        workgroupBarrier();
        s = 1u;
    }
    for (; s < p.log2n; s += 2u) {
        let h = 1u << s;
        for (var b = lid; b < p.fpw * (p.half / 4u); b += WG) {
            let pos = b & (h - 1u);
            let i0 = ((b >> s) << (s + 2u)) + pos;   // groups of 4h tile all frames
            // stage s: sub-FFTs (i0, i0 + h) and (i0 + 2h, i0 + 3h), w1 = W_2h^pos
            let w1 = tw_dir(pos << (p.log2n - s), sign);
            let a1 = cmul(w1, ld(i0 + h));
            let a3 = cmul(w1, ld(i0 + 3u * h));
            let a0 = ld(i0);
            let a2 = ld(i0 + 2u * h);
            let b0 = a0 + a1;
            let b1 = a0 - a1;
            let b2 = a2 + a3;
            let b3 = a2 - a3;
            // stage s + 1: (b0, b2) with w2 = W_4h^pos, (b1, b3) with W_4h^(pos + h) = w2 * (sign i)
            let w2 = tw_dir(pos << (p.log2n - s - 1u), sign);
            let c2 = cmul(w2, b2);
            let c3 = cmul(sign * vec2<f32>(-w2.y, w2.x), b3);
            st(i0, b0 + c2);
            st(i0 + 2u * h, b0 - c2);
            st(i0 + h, b1 + c3);
            st(i0 + 3u * h, b1 - c3);
        }
        workgroupBarrier();
    }
}

// exp(-2 pi i k / n_fft) for 0 <= k <= N (the table stops before N, where it is -1).
fn twiddle(k: u32) -> vec2<f32> {
    if (k == p.half) {
        return vec2<f32>(-1.0, 0.0);
    }
    return tw[k];
}

@compute @workgroup_size(WG)
fn stft_fft(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid3: vec3<u32>) {
    let g = wg_linear(wid, nwg);
    if (g * p.fpw >= p.total) {
        return;  // uniform per workgroup
    }
    let lid = lid3.x;
    let N = p.half;
    // load windowed frames as z[m] = x[2m] + i x[2m+1], bit-reversed
    // (loops run frame by frame so that the divisions happen once per frame)
    for (var f = 0u; f < p.fpw; f++) {
        let gf = g * p.fpw + f;
        let b = gf / p.frames;
        let q0 = (gf - b * p.frames) * p.hop;
        for (var m = lid; m < N; m += WG) {
            var z = vec2<f32>(0.0, 0.0);
            if (gf < p.total) {
                let q = q0 + 2u * m;
                z = vec2<f32>(sample(b, q) * window(2u * m), sample(b, q + 1u) * window(2u * m + 1u));
            }
            let r = f * N + bit_reverse(m);
            zre[r] = z.x;
            zim[r] = z.y;
        }
    }
    workgroupBarrier();
    fft_frames(lid, -1.0);
    // split: X[k] = E[k] + W^k O[k], E = (Z[k] + conj Z[N-k]) / 2, O = (Z[k] - conj Z[N-k]) / 2i
    for (var f = 0u; f < p.fpw; f++) {
        let gf = g * p.fpw + f;
        if (gf >= p.total) {
            break;
        }
        let b = gf / p.frames;
        let t = gf - b * p.frames;
        for (var k = lid; k <= N; k += WG) {
            let zk = vec2<f32>(zre[f * N + (k & (N - 1u))], zim[f * N + (k & (N - 1u))]);
            let zc = conj(vec2<f32>(zre[f * N + ((N - k) & (N - 1u))], zim[f * N + ((N - k) & (N - 1u))]));
            let e = 0.5 * (zk + zc);
            let d = 0.5 * (zk - zc);
            let o = vec2<f32>(d.y, -d.x);   // d / i
            let x = (e + cmul(twiddle(k), o)) * p.scale;
            let at = ((b * p.nbins + k) * p.frames + t) * 2u;
            out[at] = x.x;
            out[at + 1u] = x.y;
            if (p.nbins == p.n_fft && k > 0u && k < N) {   // two-sided: X[n - k] = conj X[k]
                let at2 = ((b * p.nbins + p.n_fft - k) * p.frames + t) * 2u;
                out[at2] = x.x;
                out[at2 + 1u] = -x.y;
            }
        }
    }
}

// Onesided spectrum bin k of frame (b, t); the imaginary parts of DC and Nyquist are
// ignored, as by torch.fft.irfft.
fn bin(b: u32, t: u32, k: u32) -> vec2<f32> {
    let at = ((b * p.nbins + k) * p.frames + t) * 2u;
    let im = select(sig[at + 1u], 0.0, k == 0u || k == p.half);
    return vec2<f32>(sig[at], im);
}

@compute @workgroup_size(WG)
fn istft_fft(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid3: vec3<u32>) {
    let g = wg_linear(wid, nwg);
    if (g * p.fpw >= p.total) {
        return;
    }
    let lid = lid3.x;
    let N = p.half;
    // merge: Z[k] = E[k] + i O[k], E = (X[k] + conj X[N-k]) / 2, O = (X[k] - conj X[N-k]) conj(W^k) / 2
    for (var f = 0u; f < p.fpw; f++) {
        let gf = g * p.fpw + f;
        let b = gf / p.frames;
        let t = gf - b * p.frames;
        for (var k = lid; k < N; k += WG) {
            var z = vec2<f32>(0.0, 0.0);
            if (gf < p.total) {
                let xk = bin(b, t, k);
                let xc = conj(bin(b, t, N - k));
                let e = 0.5 * (xk + xc);
                let o = cmul(0.5 * (xk - xc), conj(tw[k]));
                z = vec2<f32>(e.x - o.y, e.y + o.x);
            }
            let r = f * N + bit_reverse(k);
            zre[r] = z.x;
            zim[r] = z.y;
        }
    }
    workgroupBarrier();
    fft_frames(lid, 1.0);
    // x[2m] = Re z[m], x[2m+1] = Im z[m]; scale, window, store the frame
    for (var idx = lid; idx < p.fpw * N; idx += WG) {
        let gf = g * p.fpw + (idx >> p.log2n);
        if (gf >= p.total) {
            break;
        }
        let m = idx & (N - 1u);
        let at = gf * p.n_fft + 2u * m;
        out[at] = zre[idx] * p.scale * window(2u * m);
        out[at + 1u] = zim[idx] * p.scale * window(2u * m + 1u);
    }
}

// Direct DFT, one thread per (frame, bin): any n_fft.
@compute @workgroup_size(WG)
fn stft_dft(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid3: vec3<u32>) {
    let id = wg_linear(wid, nwg) * WG + lid3.x;
    if (id >= p.total * p.nbins) {
        return;
    }
    let gf = id / p.nbins;
    let k = id - gf * p.nbins;
    let b = gf / p.frames;
    let t = gf - b * p.frames;
    var acc = vec2<f32>(0.0, 0.0);
    var m = 0u;   // j * k mod n_fft, exact
    for (var j = 0u; j < p.n_fft; j++) {
        acc += sample(b, t * p.hop + j) * window(j) * tw[m];
        m = (m + k) % p.n_fft;
    }
    let at = ((b * p.nbins + k) * p.frames + t) * 2u;
    out[at] = acc.x * p.scale;
    out[at + 1u] = acc.y * p.scale;
}

// Direct inverse real DFT of a onesided spectrum, one thread per (frame, sample).
@compute @workgroup_size(WG)
fn istft_dft(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid3: vec3<u32>) {
    let id = wg_linear(wid, nwg) * WG + lid3.x;
    if (id >= p.total * p.n_fft) {
        return;
    }
    let gf = id / p.n_fft;
    let j = id - gf * p.n_fft;
    let b = gf / p.frames;
    let t = gf - b * p.frames;
    var acc = 0.0;
    var m = 0u;   // j * k mod n_fft
    for (var k = 0u; k < p.nbins; k++) {
        let at = ((b * p.nbins + k) * p.frames + t) * 2u;
        // Re(X e^{+i theta}) with tw[m] = e^{-i theta}; DC and Nyquist count once, real part only
        if (k == 0u || 2u * k == p.n_fft) {
            acc += sig[at] * tw[m].x;
        } else {
            acc += 2.0 * (sig[at] * tw[m].x + sig[at + 1u] * tw[m].y);
        }
        m = (m + j) % p.n_fft;
    }
    out[id] = acc * p.scale * window(j);
}

// y[b, i] = sum_t frames[b, t, q - t hop] / sum_t window(q - t hop)^2, q = pad + i.
// Positions past the overlap-added signal, or where the envelope is < 1e-11 (a window
// that fails NOLA; torch raises there), come out as 0. raw = 1: no division (the plain
// overlap-add, for callers that divide by the envelope of a longer signal).
@compute @workgroup_size(WG)
fn overlap_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid3: vec3<u32>) {
    let id = wg_linear(wid, nwg) * WG + lid3.x;
    if (id >= p.batch * p.length) {
        return;
    }
    let b = id / p.length;
    let q = p.pad + (id - b * p.length);
    var acc = 0.0;
    var env = 0.0;
    if (q < p.ola_len) {
        let t_hi = min(q / p.hop, p.frames - 1u);
        var t_lo = 0u;
        if (q >= p.n_fft) {
            t_lo = (q - p.n_fft) / p.hop + 1u;
        }
        for (var t = t_lo; t <= t_hi; t++) {
            let j = q - t * p.hop;
            let w = window(j);
            acc += sig[(b * p.frames + t) * p.n_fft + j];
            env += w * w;
        }
    }
    if (p.raw == 1u) {
        out[id] = acc;
    } else {
        out[id] = select(0.0, acc / env, env > 1e-11);
    }
}
