// ola_stream.wgsl: finish a block of a streamed inverse STFT, driven by
// pycore/ops/spectral_mask.py (overlap_finish).
//
// A long signal is resynthesized in blocks of frames. istft(..., center=False,
// envelope=False) gives each block's plain overlap-add `ola` (the windowed inverse FFTs
// summed, not yet divided by the window envelope). Its first `carry_len` samples overlap
// the previous block's last ones, which the caller keeps as `carry`. This kernel adds
// them, divides by the squared-window envelope of the WHOLE signal (which differs from
// the interior value near the signal's start and end), and optionally averages groups of
// `mix` rows (stereo -> mono):
//
//   out[r, j] = (1 / mix) sum_{m < mix} (ola[row, s] + carry[row, s]) / env(q0 + s)
//               with row = r * mix + m, s = start + j, carry[row, s] = 0 for s >= carry_len
//   env(q)    = sum over frames 0 <= t < total_frames with 0 <= q - t * hop < n_fft of
//               win[q - t * hop]^2     (q: position in the signal's frame grid)
//
// The block's position = (q0, total_frames) is read from a small buffer rather
// than the params, so that a recorded plan can run every block of a signal: the caller
// writes the block's position before each replay.
//
// Layouts (row-major, float32): ola [rows, ola_len], carry [rows, carry_len],
// win [n_fft], out [rows / mix, count]; position: u32 [2].
// Workgroup: WG invocations, one output sample each; 1-D grid folded by the runtime.
// Numerics: f32; the envelope is summed frame by frame in increasing t like torch.istft.

struct Params {
    rows: u32,          // rows of out
    mix: u32,           // rows of ola averaged per row of out
    ola_len: u32,
    carry_len: u32,
    start: u32,         // first ola sample emitted
    count: u32,         // samples emitted per row
    hop: u32,
    n_fft: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ola: array<f32>;
@group(0) @binding(2) var<storage, read> carry: array<f32>;
@group(0) @binding(3) var<storage, read> win: array<f32>;
// [q0: where ola[., 0] lies on the signal's frame grid, total_frames: frames of the
//  whole signal (0xffffffff: not known yet, no end)]
@group(0) @binding(4) var<storage, read> position: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

override WG: u32 = 256u;

fn envelope(q: u32) -> f32 {
    let t_hi = min(q / p.hop, position[1] - 1u);
    var t_lo = 0u;
    if (q >= p.n_fft) {
        t_lo = (q - p.n_fft) / p.hop + 1u;
    }
    var env = 0.0;
    for (var t = t_lo; t <= t_hi; t++) {
        let w = win[q - t * p.hop];
        env += w * w;
    }
    return env;
}

@compute @workgroup_size(WG)
fn finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * WG + lid;
    if (i >= p.rows * p.count) {
        return;
    }
    let r = i / p.count;
    let s = p.start + (i - r * p.count);
    let env = envelope(position[0] + s);
    var acc = 0.0;
    for (var m = 0u; m < p.mix; m++) {
        let row = r * p.mix + m;
        var v = ola[row * p.ola_len + s];
        if (s < p.carry_len) {
            v += carry[row * p.carry_len + s];
        }
        acc += select(0.0, v / env, env > 1e-11);
    }
    out[i] = acc / f32(p.mix);
}
