// spectrogram.wgsl: normalized log-magnitude frames and their way back to a spectrum,
// for MAGNet (pycore/models/magnet.py) and fast Griffin-Lim phase reconstruction.
//
//   logmag     X [F, frames, 2] (pycore.ops.spectral.stft) -> z [frames, F]:
//              z = (log(|X| + eps) - mean) * inv_std    (frames become rows: time-major)
//   add_noise  z[i] += scale * s_i * N(0, 1), the normal drawn by Box-Muller from a PCG hash
//              of (seed, offset + count[0] * F + i): reproducible for a seed, independent
//              of the grid. s_i = x[i % period] (a per-bin standard deviation) where
//              period > 0, else 1.
//   feed_back  scheduled sampling (parallel: Duckworth et al. 2019), in place on a training
//              window's input frames z [S, B, F] (frames = B lanes): frame (s, b), s >= 1, is
//              replaced, with probability count[1] / 2^32, by its prediction mag [S, B, F]
//              row (s - 1, b) plus scale * x[f] * N(0, 1) (x [F]: the per-bin noise_std),
//              i.e. by a draw of the sampler (pycore.learn.generate); row s = 0 stays.
//              The choice: pcg hash of (seed, count[0] * S * B + s * B + b) below
//              count[1]; the normal: as add_noise's, at (count[0] * n + i).
//   gl_init    mag [F, frames] = max(exp(z / inv_std + mean) - eps, 0) from z [frames, F];
//              c = tprev = mag * e^{i phi}, phi uniform from the hash of (seed + count[0], i).
//   gl_project fast Griffin-Lim (Perraudin et al. 2013): t = mag * X / |X| (mag where
//              X = 0), c = t + alpha (t - tprev), tprev = t; c, tprev [F, frames, 2].
// count [1] is read when the dispatch runs (0 for one-off calls): a recorded plan
// (pycore.gpu.runtime.Plan) keeps its parameters, so a counter that moves between its
// replays lives in a tensor.
// 1-D grids over the elements (wg_linear). Numerics: float32.

struct Params {
    n: u32,          // elements (F * frames)
    F: u32,
    frames: u32,
    mean: f32,
    inv_std: f32,
    eps: f32,
    scale: f32,      // add_noise
    seed: u32,
    offset: u32,     // add_noise: counter of the first element (plus count[0] * F)
    alpha: f32,      // gl_project momentum
    period: u32,     // add_noise: length of the per-element scale x (0: no scale)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> z: array<f32>;
@group(0) @binding(3) var<storage, read_write> mag: array<f32>;
@group(0) @binding(4) var<storage, read_write> tprev: array<f32>;
@group(0) @binding(5) var<storage, read> count: array<u32>;

const WG: u32 = 64u;
const TAU: f32 = 6.283185307179586;

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn uniform01(seed: u32, i: u32, salt: u32) -> f32 {
    // (0, 1]: never 0, so log() below stays finite
    return (f32(pcg(pcg(seed ^ salt) + i) >> 8u) + 1.0) / 16777216.0;
}

@compute @workgroup_size(64)
fn logmag(@builtin(local_invocation_index) li: u32,
          @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = wg_linear(wid, nwg) * WG + li;   // index into z: frame t, bin f
    if (i >= p.n) {
        return;
    }
    let t = i / p.F;
    let f = i % p.F;
    let k = (f * p.frames + t) * 2u;
    let a = length(vec2<f32>(x[k], x[k + 1u]));
    z[i] = (log(a + p.eps) - p.mean) * p.inv_std;
}

@compute @workgroup_size(64)
fn add_noise(@builtin(local_invocation_index) li: u32,
             @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = wg_linear(wid, nwg) * WG + li;
    if (i >= p.n) {
        return;
    }
    let k = p.offset + count[0] * p.F + i;
    let u1 = uniform01(p.seed, k, 0x9e3779b9u);
    let u2 = uniform01(p.seed, k, 0x85ebca6bu);
    var s = p.scale;
    if (p.period > 0u) {
        s *= x[i % p.period];
    }
    z[i] += s * sqrt(-2.0 * log(u1)) * cos(TAU * u2);
}

@compute @workgroup_size(64)
fn feed_back(@builtin(local_invocation_index) li: u32,
             @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = wg_linear(wid, nwg) * WG + li;   // index into z: row r = s * B + b, bin f
    if (i >= p.n) {
        return;
    }
    let r = i / p.F;
    let f = i % p.F;
    if (r < p.frames) {     // s = 0: its prediction belongs to the previous window
        return;
    }
    let rows = p.n / p.F;
    if (pcg(pcg(p.seed ^ 0x165667b1u) + count[0] * rows + r) >= count[1]) {
        return;
    }
    let k = count[0] * p.n + i;
    let u1 = uniform01(p.seed, k, 0x9e3779b9u);
    let u2 = uniform01(p.seed, k, 0x85ebca6bu);
    z[i] = mag[i - p.F * p.frames] + p.scale * x[f] * sqrt(-2.0 * log(u1)) * cos(TAU * u2);
}

@compute @workgroup_size(64)
fn gl_init(@builtin(local_invocation_index) li: u32,
           @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = wg_linear(wid, nwg) * WG + li;   // index into mag: bin f, frame t
    if (i >= p.n) {
        return;
    }
    let f = i / p.frames;
    let t = i % p.frames;
    let m = max(exp(x[t * p.F + f] / p.inv_std + p.mean) - p.eps, 0.0);
    mag[i] = m;
    let phi = TAU * uniform01(p.seed + count[0], i, 0x27d4eb2fu);
    let c = m * vec2<f32>(cos(phi), sin(phi));
    z[2u * i] = c.x;
    z[2u * i + 1u] = c.y;
    tprev[2u * i] = c.x;
    tprev[2u * i + 1u] = c.y;
}

@compute @workgroup_size(64)
fn gl_project(@builtin(local_invocation_index) li: u32,
              @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = wg_linear(wid, nwg) * WG + li;
    if (i >= p.n) {
        return;
    }
    let v = vec2<f32>(x[2u * i], x[2u * i + 1u]);
    let a = length(v);
    var t = vec2<f32>(mag[i], 0.0);
    if (a > 0.0) {
        t = mag[i] * v / a;
    }
    let prev = vec2<f32>(tprev[2u * i], tprev[2u * i + 1u]);
    let c = t + p.alpha * (t - prev);
    z[2u * i] = c.x;
    z[2u * i + 1u] = c.y;
    tprev[2u * i] = t.x;
    tprev[2u * i + 1u] = t.y;
}
