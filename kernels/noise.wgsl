// noise.wgsl: DDSP's filtered noise, the parts around the FFTs (pycore/ops/ddsp.py runs
// the transforms with pycore.ops.spectral and the product with fftconv.wgsl):
//
//   magnitudes  controls -> spectrum [M, F, 2] = (magnitude, 0) of the M noise bands of
//               every frame (non-finite or negative values count as 0), in the layout
//               pycore.ops.spectral.istft reads. istft(n_fft = L = 2 (M - 1), hop = L,
//               window = fftshift(hann(L))) of it gives ddsp's zero-phase, windowed
//               frequency-sampling FIRs, one per frame ([F * L]).
//   frames      [2, F, nfft] time-domain frames for one stft call (hop = nfft, window of
//               ones): row 0 holds the hop noise samples of frame f (then zeros), row 1
//               frame f's FIR in causal form (ddsp's fftshift: c[i] = z[(i + L/2) mod L],
//               then zeros). nfft >= hop + L - 1, so the product of their spectra is the
//               linear convolution, ready for overlap-add.
//
// Noise: uniform in [-1, 1) (ddsp: tf.random.uniform), a function of the 64-bit global
// sample index and a seed only, so offline rendering and any split into blocks produce
// the same samples: h = pcg(lo + pcg(hi + pcg(seed))), value = (h >> 8) * 2^-23 - 1,
// exact in float32 (24 bits). pcg is the PCG-based integer hash of Jarzynski and Olano,
// "Hash Functions for GPU Rendering" (JCGT 2020); a different seed gives another
// stretch of the same 2^32-sample sequence. pycore/reference/ddsp_numpy.py mirrors it.
//
// The block's first sample is (sample_hi, sample_lo) plus, when use_ctr is 1, the count
// held on the GPU in ctr: two float32 values (samples mod 2^16, samples div 2^16), exact
// integers up to 2^40 samples, so that a recorded plan (pycore.gpu.runtime.Plan) can
// advance it without a parameter change. advance: out = ctr + count, same layout.
//
// Layouts (row-major, float32): ctrl [F, stride] with the M noise magnitudes at columns
// col .. col + M - 1; irs [F * L]. Workgroup: WG invocations, one output value each,
// 1-D grid folded by the runtime (wg_linear) and bounds-checked.
// Numerics: copies and integer hashing only; nothing rounds.

struct Params {
    frames: u32,     // F
    stride: u32,     // values per controls row
    col: u32,        // first noise column in a controls row
    bands: u32,      // M
    hop: u32,        // noise samples per frame
    ir_size: u32,    // L = 2 (M - 1)
    nfft: u32,       // frame length of the convolution FFT
    sample_lo: u32,  // global index of the block's first sample (low, high 32 bits)
    sample_hi: u32,
    seed: u32,
    use_ctr: u32,    // 1: add the sample count in ctr
    count: u32,      // advance: samples to add
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ctrl: array<f32>;
@group(0) @binding(2) var<storage, read> irs: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> ctr: array<f32>;

override WG: u32 = 64u;

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// Uniform noise in [-1, 1) for sample (block start + i).
fn white(i: u32) -> f32 {
    var lo0 = p.sample_lo;
    var hi0 = p.sample_hi;
    if (p.use_ctr == 1u) {
        let c0 = u32(ctr[0]);
        let c1 = u32(ctr[1]);
        let add_lo = (c1 << 16u) | c0;
        let sum = lo0 + add_lo;
        hi0 = hi0 + (c1 >> 16u) + select(0u, 1u, sum < lo0);
        lo0 = sum;
    }
    let lo = lo0 + i;
    let hi = hi0 + select(0u, 1u, lo < lo0);   // carry
    let h = pcg(lo + pcg(hi + pcg(p.seed)));
    return f32(h >> 8u) * 1.1920928955078125e-7 - 1.0;
}

@compute @workgroup_size(WG)
fn magnitudes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = wg_linear(wid, nwg) * WG + lid.x;      // (band, frame)
    if (i >= p.bands * p.frames) {
        return;
    }
    let b = i / p.frames;
    let f = i - b * p.frames;
    let m = ctrl[f * p.stride + p.col + b];
    let bits = bitcast<u32>(m);
    let bad = (bits & 0x7f800000u) == 0x7f800000u || (bits >> 31u) == 1u;
    out[2u * i] = select(m, 0.0, bad);
    out[2u * i + 1u] = 0.0;
}

@compute @workgroup_size(WG)
fn frames(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = wg_linear(wid, nwg) * WG + lid.x;      // (row, frame, position)
    if (i >= 2u * p.frames * p.nfft) {
        return;
    }
    let row = i / (p.frames * p.nfft);
    let rest = i - row * p.frames * p.nfft;
    let f = rest / p.nfft;
    let j = rest - f * p.nfft;
    var v = 0.0;
    if (row == 0u && j < p.hop) {
        v = white(f * p.hop + j);
    } else if (row == 1u && j < p.ir_size) {
        let half = p.ir_size / 2u;
        v = irs[f * p.ir_size + select(j + half, j - half, j >= half)];
    }
    out[i] = v;
}

@compute @workgroup_size(1)
fn advance() {
    var c0 = ctr[0] + f32(p.count & 0xffffu);
    var c1 = ctr[1] + f32(p.count >> 16u);
    if (c0 >= 65536.0) {
        c0 = c0 - 65536.0;
        c1 = c1 + 1.0;
    }
    out[0] = c0;
    out[1] = c1;
}
