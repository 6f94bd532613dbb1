// pitch_track.wgsl: a pitch track at every frame from CREPE run on every second frame
// (the tone engine's lower analysis rate, pycore/tone/stream.py).
//
//   track  rows = [prev, new_0 .. new_{n-1}]: (f0 Hz, confidence) analysed at frames
//          L, L + 2, .., L + 2 n. Output row i is the track at frame L + offset + i:
//          at an analysed frame its row; between two, f0 interpolated halfway in cents
//          (the geometric mean of the two f0s; a row with f0 <= 0, the start of a take,
//          gives the other's f0) and the confidence halfway. `last` = rows[n], the row
//          the next block starts from (prev itself when n = 0).
//
// Layouts (float32): prev [2]; rows_in [n, 2] (a dummy binding when n = 0); out
// [frames, 2]; last [2].
// Workgroup: WG invocations, one output row each; 1-D grid (wg_linear).
// Numerics: float32; sqrt(a * b) is within 1 ulp-ish of 2^((log2 a + log2 b) / 2)
// (a, b <= 2006 Hz: the product cannot overflow).

override WG: u32 = 64u;

struct Params {
    frames: u32,     // output rows
    n: u32,          // rows analysed in this block
    offset: u32,     // frame of output row 0, minus L (0 or 1)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> prev: array<f32>;
@group(0) @binding(2) var<storage, read> rows_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> last: array<f32>;

// Row k of [prev, new_0 ..]: (f0, confidence).
fn row(k: u32) -> vec2<f32> {
    if (k == 0u) {
        return vec2<f32>(prev[0], prev[1]);
    }
    return vec2<f32>(rows_in[2u * (k - 1u)], rows_in[2u * (k - 1u) + 1u]);
}

fn halfway(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    var f0 = sqrt(a.x * b.x);
    if (a.x <= 0.0) { f0 = b.x; }
    if (b.x <= 0.0) { f0 = a.x; }
    return vec2<f32>(f0, 0.5 * (a.y + b.y));
}

@compute @workgroup_size(WG)
fn track(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = wg_linear(wid, nwg) * WG + lid;
    if (i == 0u) {
        let r = row(p.n);
        last[0] = r.x;
        last[1] = r.y;
    }
    if (i >= p.frames) { return; }
    let u = p.offset + i;
    var v = row(u / 2u);
    if (u % 2u == 1u) {
        v = halfway(v, row(u / 2u + 1u));
    }
    out[2u * i] = v.x;
    out[2u * i + 1u] = v.y;
}
