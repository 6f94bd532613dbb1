"""DDSP synthesis ops (kernels/harmonic.wgsl, noise.wgsl, fftconv.wgsl, ddsp_decoder.wgsl).

Harmonic oscillator bank (see harmonic.wgsl for the math and numerics):
    rows  = harmonic_rows(controls, prev, n_harmonics, sample_rate)   [F + 1, K + 1]
    inc   = harmonic_increments(rows, hop, sample_rate)                [2, F * hop] (hi, lo)
    phase, state = pycore.ops.scan.phase_cumsum(inc, initial=state)    [2, F * hop], [2, 1]
    audio = harmonic_bank(rows, phase, hop, sample_rate)               [F * hop]
Filtered noise (noise.wgsl):
    spec  = noise_magnitudes(controls, col, bands)                     [M, F, 2]
    frames = noise_frames(irs, hop, nfft, sample, seed)                [2, F * nfft]
Streaming FFT convolution (fftconv.wgsl):
    y     = spectral_mac(x, h, hist=None, ...)                         [bins, K, 2]
    hist  = fdl_shift(hist, x)                                         [bins, P - 1, 2]
    out   = ola_carry(ola, tail, start, count, delay, base=None, ...)  [count + 2 pad]
Decoder ends (ddsp_decoder.wgsl):
    ld_scaled, f0_scaled = decoder_inputs(f0_hz, loudness_db)          [F, 1] each
    controls = decoder_head(raw, f0_hz, n_harmonics, n_noise, noise_bias=-5.0)

`controls` is the synthesizer's packed frame tensor [F, 2 + K + M]: per frame f0 in Hz,
overall amplitude, K harmonic weights (unnormalized), M noise-band magnitudes (all
linear, >= 0). pycore/models/ddsp.py composes these ops into the decoder and the
streaming synthesizer.
"""

from __future__ import annotations

import math

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, flat, rand, rng
from . import expect, expect_dtype, expect_loop_steps, same_device

WG = 64   # invocations per workgroup in all four kernel files


def _tensor(op, name, t, ndim=None):
    expect(op, isinstance(t, Tensor), f"{name} must be a Tensor, got {type(t).__name__}")
    expect_dtype(op, t, "f32")
    if ndim is not None:
        expect(op, t.ndim in ndim, f"{name} must have {' or '.join(map(str, ndim))} dimensions", t)


def _int(op, name, v, lo=0):
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo
    expect(op, ok, f"{name} must be an int >= {lo}, got {v!r}")


def _cached(dev, key, make):
    """A small constant tensor made once per device (kept on the device object)."""
    tables = dev.__dict__.setdefault("_ddsp_tables", {})
    if key not in tables:
        tables[key] = make()
    return tables[key]


def ones(dev, n):
    """A cached f32 tensor of n ones (rectangular windows for stft / istft)."""
    return _cached(dev, ("ones", n), lambda: dev.tensor([1.0] * n, (n,)))


def upsample_window(dev, hop):
    """w[j] = 0.5 - 0.5 cos(pi j / hop), j < hop: the rising half of ddsp's Hann window of
    2 * hop for 'window' upsampling, computed in float64 (cached)."""
    return _cached(dev, ("upsample", hop), lambda: dev.tensor(
        [0.5 - 0.5 * math.cos(math.pi * j / hop) for j in range(hop)], (hop,)))


def zero_phase_hann(dev, n):
    """fftshift(periodic Hann(n)) = 0.5 + 0.5 cos(2 pi m / n): ddsp's window for
    frequency-sampling FIRs in zero-phase form, computed in float64 (cached)."""
    return _cached(dev, ("zphann", n), lambda: dev.tensor(
        [0.5 + 0.5 * math.cos(2 * math.pi * m / n) for m in range(n)], (n,)))


# ---------------------------------------------------------------- harmonic.wgsl

def _harmonic(dev, entry, grid, ctrl, prev, rows, phase, win, out, **params):
    base = dict(frames=0, harmonics=0, stride=1, hop=1, n=0, nyquist=0.0, sr=0.0, inv_sr=0.0, inv_hop=0.0)
    base.update(params)
    dev.run(dev.kernel("harmonic", entry, consts={"WG": WG}), ceil_div(grid, WG),
            ctrl=ctrl, prev=prev, rows=rows, phase=phase, win=win, out=out, **base)
    return out


def harmonic_rows(controls, prev, n_harmonics, sample_rate):
    """Per-frame f0 and harmonic amplitudes of a block: rows [F + 1, K + 1], row 0 from
    `prev` (the frame before the block, [C] or [1, C]), row r from controls[r - 1];
    A_k = amplitude * d_k / sum(d), harmonics at or above Nyquist removed first."""
    op = "harmonic_rows"
    _tensor(op, "controls", controls, (2,))
    _tensor(op, "prev", prev)
    _int(op, "n_harmonics", n_harmonics, 1)
    F, C = controls.shape
    expect(op, F >= 1 and C >= 2 + n_harmonics,
           f"controls must be [F >= 1, >= 2 + n_harmonics = {2 + n_harmonics}]", controls)
    expect(op, prev.size == C, f"prev must hold one controls row of {C} values", controls, prev)
    _sample_rate(op, sample_rate)
    expect_loop_steps(op, 2 * (n_harmonics + 1), f"{n_harmonics} harmonics", controls)  # 2 loops per row
    dev = same_device(op, controls, prev)
    rows = dev.empty((F + 1, n_harmonics + 1))
    return _harmonic(dev, "frame_amps", F + 1, controls, prev, controls, controls, controls, rows,
                     frames=F, harmonics=n_harmonics, stride=C, nyquist=sample_rate / 2)


def _rows_block(op, rows, hop):
    _tensor(op, "rows", rows, (2,))
    _int(op, "hop", hop, 1)
    expect(op, rows.shape[0] >= 2 and rows.shape[1] >= 2, "rows must be [F + 1 >= 2, K + 1 >= 2]", rows)
    return rows.shape[0] - 1, rows.shape[1] - 1


def _sample_rate(op, sample_rate):
    odd = sample_rate
    while isinstance(odd, int) and odd > 0 and odd % 2 == 0:
        odd //= 2
    expect(op, isinstance(sample_rate, int) and sample_rate > 0 and odd < 2**16,
           f"sample_rate must be a positive int whose odd part is < 2**16, got {sample_rate!r}")


def harmonic_increments(rows, hop, sample_rate):
    """Per-sample phase increments (cycles) f0(n) / sample_rate, f0 linear between rows,
    as two float32 lines [2, F * hop] whose sum is the increment to ~1e-11 (hi = the
    float32 rounding, lo = the rest; see harmonic.wgsl). Scan both with phase_cumsum."""
    op = "harmonic_increments"
    F, K = _rows_block(op, rows, hop)
    _sample_rate(op, sample_rate)
    dev = rows.dev
    inc = dev.empty((2, F * hop))
    return _harmonic(dev, "increments", F * hop, rows, rows, rows, rows, rows, inc,
                     frames=F, harmonics=K, hop=hop, n=F * hop, sr=float(sample_rate),
                     inv_sr=1 / sample_rate, inv_hop=1 / hop)


def harmonic_bank(rows, phase, hop, sample_rate):
    """sum_k a_k(n) sin(2 pi frac(k phase(n))) over the harmonics below Nyquist, with the
    amplitudes of `rows` upsampled by overlapping Hann windows (ddsp's 'window');
    phase [2, F * hop]: the scanned (hi, lo) lines, phase = their sum modulo 1."""
    op = "harmonic_bank"
    F, K = _rows_block(op, rows, hop)
    _tensor(op, "phase", phase)
    expect(op, phase.shape == (2, F * hop), f"phase must be [2, F * hop = {F * hop}] (hi and lo lines)",
           rows, phase)
    _sample_rate(op, sample_rate)
    expect_loop_steps(op, K + 1, f"{K} harmonics", rows)  # one invocation per sample loops over them
    dev = same_device(op, rows, phase)
    out = dev.empty((F * hop,))
    return _harmonic(dev, "oscillators", F * hop, rows, rows, rows, phase, upsample_window(dev, hop), out,
                     frames=F, harmonics=K, hop=hop, n=F * hop, nyquist=sample_rate / 2,
                     sr=float(sample_rate), inv_sr=1 / sample_rate, inv_hop=1 / hop)


# ---------------------------------------------------------------- noise.wgsl

def _noise(dev, entry, grid, ctrl, irs, out, ctr=None, **params):
    base = dict(frames=0, stride=1, col=0, bands=0, hop=0, ir_size=0, nfft=0, sample_lo=0,
                sample_hi=0, seed=0, use_ctr=0, count=0)
    base.update(params)
    dev.run(dev.kernel("noise", entry, consts={"WG": WG}), ceil_div(grid, WG),
            ctrl=ctrl, irs=irs, out=out, ctr=ctrl if ctr is None else ctr, **base)
    return out


def noise_magnitudes(controls, col, bands):
    """(magnitude, 0) of the noise bands controls[:, col:col + bands] as a spectrum
    [bands, F, 2] for istft (non-finite or negative magnitudes count as 0)."""
    op = "noise_magnitudes"
    _tensor(op, "controls", controls, (2,))
    _int(op, "col", col)
    _int(op, "bands", bands, 2)
    F, C = controls.shape
    expect(op, F >= 1 and col + bands <= C, f"controls must be [F >= 1, >= col + bands = {col + bands}]", controls)
    out = controls.dev.empty((bands, F, 2))
    return _noise(controls.dev, "magnitudes", bands * F, controls, controls, out,
                  frames=F, stride=C, col=col, bands=bands)


def _seed_sample(op, sample, seed):
    _int(op, "sample", sample)
    expect(op, sample < 2**64, f"sample must be < 2**64, got {sample}")
    _int(op, "seed", seed)
    expect(op, seed < 2**32, f"seed must fit 32 bits, got {seed}")
    return dict(sample_lo=sample & 0xFFFFFFFF, sample_hi=sample >> 32, seed=seed)


def noise_frames(irs, hop, nfft, sample, seed=0, counter=None):
    """Frames [2, F * nfft] for one stft (hop = nfft): row 0 frame f = the hop noise
    samples starting at global sample index `sample + f * hop`, then zeros; row 1 frame
    f = FIR f of irs ([F, L] zero-phase, from istft) rotated to causal form, then zeros.
    counter: a sample count kept on the GPU (noise_counter / noise_advance), added to
    `sample`, so that a recorded plan moves through the noise without new parameters."""
    op = "noise_frames"
    _tensor(op, "irs", irs, (2,))
    if counter is not None:
        _counter(op, counter)
    F, L = irs.shape
    _int(op, "hop", hop, 1)
    _int(op, "nfft", nfft, 1)
    expect(op, F >= 1 and L >= 2 and L % 2 == 0, "irs must be [F >= 1, L] with L even", irs)
    expect(op, nfft >= hop + L - 1, f"nfft = {nfft} must be >= hop + L - 1 = {hop + L - 1}", irs)
    args = _seed_sample(op, sample, seed)
    out = irs.dev.empty((2, F * nfft))
    return _noise(irs.dev, "frames", 2 * F * nfft, irs, irs, out, ctr=counter,
                  frames=F, hop=hop, ir_size=L, nfft=nfft, use_ctr=int(counter is not None), **args)


def noise_counter(dev, sample=0):
    """A GPU sample count for noise_frames: [2] float32 (sample mod 2**16, sample div
    2**16), exact up to 2**40 samples."""
    _int("noise_counter", "sample", sample)
    expect("noise_counter", sample < 2**40, f"sample must be < 2**40, got {sample}")
    return dev.tensor([float(sample % 65536), float(sample // 65536)], (2,))


def noise_advance(counter, n):
    """A new counter n samples after `counter` (one dispatch, no host round trip)."""
    op = "noise_advance"
    _counter(op, counter)
    _int(op, "n", n)
    expect(op, n < 2**32, f"n must fit 32 bits, got {n}")
    out = counter.dev.empty((2,))
    return _noise(counter.dev, "advance", 1, counter, counter, out, ctr=counter, count=n)


def _counter(op, counter):
    _tensor(op, "counter", counter)
    expect(op, counter.shape == (2,), "counter must be the [2] tensor of noise_counter", counter)


# ---------------------------------------------------------------- fftconv.wgsl

def _fftconv(dev, entry, grid, a, x, h, out, **params):
    base = dict(bins=0, frames=0, hist=0, parts=1, h_frames=0, h_off=0, hstride=0, flip=0, start=0,
                count=0, pad=0, delay=0, tail_len=0, ola_len=0, has_base=0, base_off=0)
    base.update(params)
    dev.run(dev.kernel("fftconv", entry, consts={"WG": WG}), ceil_div(grid, WG),
            a=a, x=x, h=h, out=out, **base)
    return out


def _spectrum(op, name, t):
    _tensor(op, name, t)
    expect(op, t.ndim >= 3 and t.shape[-1] == 2, f"{name} must be [..., bins, frames, 2]", t)


def spectral_mac(x, h, hist=None, parts=1, hstride=0, h_off=0, flip=False):
    """Spectra of a block of a streaming FFT convolution: for new frames x [bins, K, 2]
    (a leading batch dim of 1 is fine) and the P - 1 history frames hist [bins, P - 1, 2],
    y[b, t] = s_b sum_{p < P} X(t + P - 1 - p)[b] * H(p, t)[b], where X = [hist, x] along
    frames and H(p, t) is frame p + t * hstride of h [..., bins, frames_h, 2] counted from
    complex value h_off; s_b = (-1)^b with flip. See fftconv.wgsl."""
    op = "spectral_mac"
    _spectrum(op, "x", x)
    _spectrum(op, "h", h)
    _int(op, "parts", parts, 1)
    expect(op, hstride in (0, 1), f"hstride must be 0 or 1, got {hstride!r}")
    _int(op, "h_off", h_off)
    bins, K = x.shape[-3], x.shape[-2]
    expect(op, h.shape[-3] == bins, f"h must have {bins} bins like x", x, h)
    hf = h.shape[-2]
    expect(op, hstride == 0 or parts == 1, "a per-block filter (hstride 1) needs parts == 1")
    need = parts if hstride == 0 else K
    expect(op, hf >= need and h_off + bins * hf <= h.size // 2,
           f"h needs {need} frames per bin after offset {h_off}", x, h)
    if parts > 1:
        expect(op, hist is not None, f"{parts} partitions need a history of {parts - 1} frames", x)
    if hist is not None:
        _spectrum(op, "hist", hist)
        expect(op, hist.shape[-3] == bins and hist.shape[-2] == parts - 1,
               f"hist must be [{bins}, parts - 1 = {parts - 1}, 2]", x, hist)
    expect_loop_steps(op, parts + 1, f"{parts} partitions", x)  # one invocation per value loops over them
    dev = same_device(op, x, h, hist)
    y = dev.empty((bins, K, 2))
    return _fftconv(dev, "mac", bins * K, hist if hist is not None and hist.size else x, x, h, y,
                    bins=bins, frames=K, hist=parts - 1, parts=parts, h_frames=hf, h_off=h_off,
                    hstride=hstride, flip=int(bool(flip)))


def fdl_shift(hist, x):
    """The last P - 1 frames of [hist, x] along frames: the history for the next block."""
    op = "fdl_shift"
    _spectrum(op, "hist", hist)
    _spectrum(op, "x", x)
    bins, H = hist.shape[-3], hist.shape[-2]
    expect(op, x.shape[-3] == bins, f"x must have {bins} bins like hist", hist, x)
    dev = same_device(op, hist, x)
    out = dev.empty((bins, H, 2))
    if H == 0:
        return out
    return _fftconv(dev, "fdl_shift", bins * H, hist, x, x, out, bins=bins, frames=x.shape[-2], hist=H)


def ola_carry(ola, tail, start, count, delay=0, base=None, base_off=0, pad=0):
    """v(i) = base[base_off + i] + tail[i] + ola[i - delay] for i = start .. start + count - 1
    (terms outside their tensors are 0; base only if given), written after `pad` zeros and
    followed by `pad` zeros: [count + 2 * pad]. This block's samples: start 0, count n;
    the tail for later blocks: start n, count = len(tail)."""
    op = "ola_carry"
    _tensor(op, "ola", ola)
    _tensor(op, "tail", tail)
    for name, v in (("start", start), ("delay", delay), ("base_off", base_off), ("pad", pad)):
        _int(op, name, v)
    _int(op, "count", count, 1)
    if base is not None:
        _tensor(op, "base", base)
        expect(op, base_off + start + count <= base.size,
               f"base must hold base_off + start + count = {base_off + start + count} samples", base)
    dev = same_device(op, ola, tail, base)
    out = dev.empty((count + 2 * pad,))
    return _fftconv(dev, "ola_carry", count + 2 * pad, base if base is not None else ola, tail, ola, out,
                    start=start, count=count, pad=pad, delay=delay, tail_len=tail.size,
                    ola_len=ola.size, has_base=int(base is not None), base_off=base_off)


# ---------------------------------------------------------------- ddsp_decoder.wgsl

def _decoder(dev, entry, grid, x, f0, out, **params):
    base = dict(frames=0, mode=0, harmonics=0, bands=0, noise_bias=0.0)
    base.update(params)
    dev.run(dev.kernel("ddsp_decoder", entry, consts={"WG": WG}), ceil_div(grid, WG),
            x=x, f0=f0, out=out, **base)
    return out


def decoder_inputs(f0_hz, loudness_db):
    """ddsp's scaled decoder inputs: (ld_scaled = loudness_db / 80 + 1,
    f0_scaled = hz_to_midi(f0_hz) / 127), each [F, 1]; f0 <= 0 -> 0, non-finite -> 0."""
    op = "decoder_inputs"
    _tensor(op, "f0_hz", f0_hz, (1,))
    _tensor(op, "loudness_db", loudness_db, (1,))
    expect(op, f0_hz.shape == loudness_db.shape, "f0_hz and loudness_db must both be [F]", f0_hz, loudness_db)
    dev = same_device(op, f0_hz, loudness_db)
    F = f0_hz.shape[0]
    ld, f0 = dev.empty((F, 1)), dev.empty((F, 1))
    if F:
        _decoder(dev, "scale_inputs", F, loudness_db, loudness_db, ld, frames=F, mode=0)
        _decoder(dev, "scale_inputs", F, f0_hz, f0_hz, f0, frames=F, mode=1)
    return ld, f0


def decoder_head(raw, f0_hz, n_harmonics, n_noise, noise_bias=-5.0):
    """Decoder outputs raw [F, 1 + K + M] (amplitude, harmonics, noise) -> controls
    [F, 2 + K + M] = [f0_hz, exp_sigmoid(amp), exp_sigmoid(harmonics),
    exp_sigmoid(noise + noise_bias)]."""
    op = "decoder_head"
    _tensor(op, "raw", raw, (2,))
    _tensor(op, "f0_hz", f0_hz, (1,))
    _int(op, "n_harmonics", n_harmonics, 1)
    _int(op, "n_noise", n_noise, 1)
    F = raw.shape[0]
    expect(op, raw.shape[1] == 1 + n_harmonics + n_noise,
           f"raw must be [F, 1 + n_harmonics + n_noise = {1 + n_harmonics + n_noise}]", raw)
    expect(op, f0_hz.shape == (F,), f"f0_hz must be [{F}]", raw, f0_hz)
    dev = same_device(op, raw, f0_hz)
    out = dev.empty((F, 2 + n_harmonics + n_noise))
    if F:
        _decoder(dev, "head", out.size, raw, f0_hz, out, frames=F, harmonics=n_harmonics,
                 bands=n_noise, noise_bias=float(noise_bias))
    return out


# ---------------------------------------------------------------- pure-Python references
# float64 versions of the same math for the self-checks (the browser has no numpy).

def pcg(v):
    """The PCG hash of noise.wgsl on Python ints (32-bit wrapping)."""
    state = (v * 747796405 + 2891336453) & 0xFFFFFFFF
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & 0xFFFFFFFF
    return (word >> 22) ^ word


def white_ref(index, seed=0):
    """noise.wgsl's sample at a 64-bit global index: uniform in [-1, 1), exact."""
    lo, hi = index & 0xFFFFFFFF, index >> 32
    h = pcg((lo + pcg((hi + pcg(seed)) & 0xFFFFFFFF)) & 0xFFFFFFFF)
    return (h >> 8) * 2.0**-23 - 1.0


def _f32(values):
    import array

    return array.array("f", values).tolist()


@check("ddsp_harmonic")
async def _check_harmonic(dev):
    # 3 frames of hop 8 at sr 100 (Nyquist 50): f0 rises 4 -> 9 -> 20 Hz -> harmonics at
    # or above Nyquist drop out per frame and per sample. float64 reference. Error budget:
    # increments (hi + lo) ~1e-11 relative; phase <= 2 * 2^-25 cycles * k <= 3e-7; the
    # polynomial sine 1e-7; float32 amplitudes ~1e-7 relative: atol 4e-6 on |y| <= 1.
    from .scan import phase_cumsum

    r = rng(31)
    K, hop, sr, F = 5, 8, 100, 3
    C = 2 + K + 2
    ctrl = []
    for f0 in (4.0, 9.0, 20.0):
        ctrl += [f0, r.uniform(0.2, 1.0)] + rand(r, K, 0.0, 1.0) + [0.0, 0.0]
    ctrl = _f32(ctrl)
    prev = _f32([3.0, 0.5] + rand(r, K, 0.0, 1.0) + [0.0, 0.0])
    c, pv = dev.tensor(ctrl, (F, C)), dev.tensor(prev, (C,))
    rows = harmonic_rows(c, pv, K, sr)
    inc = harmonic_increments(rows, hop, sr)
    phase, _ = phase_cumsum(inc)
    got = await harmonic_bank(rows, phase, hop, sr).read()
    incs = flat(await inc.read())
    # reference
    frames = [prev] + [ctrl[i * C:(i + 1) * C] for i in range(F)]
    amps = []
    for fr in frames:
        keep = [fr[2 + k] if (k + 1) * fr[0] < sr / 2 else 0.0 for k in range(K)]
        s = sum(keep) or 1e-7
        amps.append([fr[1] * d / s for d in keep])
    want, want_inc, ph = [], [], 0.0
    for n in range(F * hop):
        f, j = divmod(n, hop)
        f0 = frames[f][0] + j / hop * (frames[f + 1][0] - frames[f][0])
        want_inc.append(f0 / sr)
        ph = (ph + f0 / sr) % 1.0
        wb = 0.5 - 0.5 * math.cos(math.pi * j / hop)
        y = 0.0
        for k in range(1, K + 1):
            if k * f0 >= sr / 2:
                break
            y += ((1 - wb) * amps[f][k - 1] + wb * amps[f + 1][k - 1]) * math.sin(2 * math.pi * (k * ph % 1.0))
        want.append(y)
    n = F * hop
    assert_close("harmonic_increments", [a + b for a, b in zip(incs[:n], incs[n:])], want_inc, rtol=1e-9, atol=0)
    return assert_close("harmonic_bank", got, want, rtol=0, atol=4e-6)


@check("ddsp_noise")
async def _check_noise(dev):
    # The noise is integer hashing plus one exact int -> float conversion: bit-exact. The
    # FIR rotation and the magnitude spectrum are copies: exact.
    r = rng(32)
    F, hop, L, nfft, M = 2, 3, 6, 8, 4
    sample = 2**32 - 4           # the block crosses the 32-bit boundary of the index
    irs = _f32(rand(r, F * L))
    got = flat(await noise_frames(dev.tensor(irs, (F, L)), hop, nfft, sample, seed=7).read())
    want = []
    for f in range(F):
        want += [white_ref(sample + f * hop + j, 7) for j in range(hop)] + [0.0] * (nfft - hop)
    for f in range(F):
        want += [irs[f * L + (j + L // 2) % L] for j in range(L)] + [0.0] * (nfft - L)
    if got != want:
        bad = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
        raise AssertionError(f"noise_frames: {got[bad]} at {bad}, expected {want[bad]}")
    ctrl = _f32(rand(r, F * (2 + M), -0.5, 1.0))
    spec = flat(await noise_magnitudes(dev.tensor(ctrl, (F, 2 + M)), 2, M).read())
    want = []
    for b in range(M):
        for f in range(F):
            v = ctrl[f * (2 + M) + 2 + b]
            want += [v if v > 0 else 0.0, 0.0]
    if spec != want:
        raise AssertionError(f"noise_magnitudes: {spec} != {want}")
    return f"{len(got)} frame values and {len(spec)} spectrum values exact"


def _cmul(u, v):
    return (u[0] * v[0] - u[1] * v[1], u[0] * v[1] + u[1] * v[0])


@check("fftconv")
async def _check_fftconv(dev):
    # Sums of P = 3 complex products of values <= 1 and single adds: float32 rounding
    # ~3 * 2^-24 * 6 ~ 1e-6 at most.
    r = rng(33)
    bins, K, P = 3, 4, 3
    hist, x, h = (_f32(rand(r, bins * n * 2)) for n in (P - 1, K, P))
    ht, xt, hh = dev.tensor(hist, (bins, P - 1, 2)), dev.tensor(x, (bins, K, 2)), dev.tensor(h, (bins, P, 2))
    got = await spectral_mac(xt, hh, hist=ht, parts=P, flip=True).read()
    shifted = flat(await fdl_shift(ht, xt).read())
    want, want_hist = [], []
    for b in range(bins):
        seq = [(hist[2 * (b * (P - 1) + j)], hist[2 * (b * (P - 1) + j) + 1]) for j in range(P - 1)]
        seq += [(x[2 * (b * K + j)], x[2 * (b * K + j) + 1]) for j in range(K)]
        for t in range(K):
            acc = (0.0, 0.0)
            for q in range(P):
                pr = _cmul(seq[t + P - 1 - q], (h[2 * (b * P + q)], h[2 * (b * P + q) + 1]))
                acc = (acc[0] + pr[0], acc[1] + pr[1])
            s = -1.0 if b % 2 else 1.0
            want += [s * acc[0], s * acc[1]]
        for v in seq[K:]:
            want_hist += list(v)
    d1 = assert_close("spectral_mac", got, want, rtol=0, atol=2e-6)
    if shifted != want_hist:
        raise AssertionError(f"fdl_shift: {shifted} != {want_hist}")
    # overlap-add carry: 5 samples, ola of 7 delayed by 2, tail of 4, base, pad 1
    ola, tail, base = (_f32(rand(r, n)) for n in (7, 4, 9))
    ot, tt, bt = dev.tensor(ola, (7,)), dev.tensor(tail, (4,)), dev.tensor(base, (9,))
    block = flat(await ola_carry(ot, tt, 0, 5, delay=2, base=bt, base_off=1, pad=1).read())
    carry = flat(await ola_carry(ot, tt, 5, 4, delay=2).read())

    def v(i, with_base):
        s = base[1 + i] if with_base else 0.0
        s += tail[i] if i < 4 else 0.0
        return s + (ola[i - 2] if 0 <= i - 2 < 7 else 0.0)

    d2 = assert_close("ola_carry", block + carry, [0.0] + [v(i, True) for i in range(5)] + [0.0]
                      + [v(5 + i, False) for i in range(4)], rtol=0, atol=1e-6)
    return f"{d1}; {d2}"


def _exp_sigmoid_ref(v):
    sig = 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))
    return 2 * sig ** math.log(10) + 1e-7


@check("ddsp_decoder_io")
async def _check_decoder_io(dev):
    # exp, log and log2 in float32 (a few ulp each): relative 1e-5, absolute 1e-6.
    r = rng(34)
    F, K, M = 3, 2, 3
    f0 = _f32([0.0, 220.0, 1234.5])
    ld = _f32([-80.0, -20.5, 0.0])
    raw = _f32(rand(r, F * (1 + K + M), -8.0, 8.0))
    lt, ft = decoder_inputs(dev.tensor(f0, (F,)), dev.tensor(ld, (F,)))
    ctrl = await decoder_head(dev.tensor(raw, (F, 1 + K + M)), dev.tensor(f0, (F,)), K, M).read()
    scaled = flat(await lt.read()) + flat(await ft.read())
    want = [v / 80 + 1 for v in ld] + [(12 * (math.log2(v) - math.log2(440)) + 69) / 127 if v > 0 else 0.0
                                       for v in f0]
    d1 = assert_close("decoder_inputs", scaled, want, rtol=1e-5, atol=1e-6)
    want = []
    for f in range(F):
        row = raw[f * (1 + K + M):(f + 1) * (1 + K + M)]
        want += [f0[f]] + [_exp_sigmoid_ref(v - (5.0 if i > K else 0.0)) for i, v in enumerate(row)]
    d2 = assert_close("decoder_head", ctrl, want, rtol=1e-5, atol=1e-6)
    return f"{d1}; {d2}"


# ---------------------------------------------------------------- benchmark (native only)


def bench_oscillator_drift(dev, seconds=3600, sample_rate=48000, hop=192, chunk_frames=1 << 15):
    """Phase drift of the synthesizer's oscillator over a long stream, against a float64
    oscillator driven by the same float32 frame f0s: the phase path of Synth.render
    (harmonic_rows -> harmonic_increments -> phase_cumsum with the state carried from
    chunk to chunk) for two f0 tracks, a vibrato sweeping 100..2000 Hz at 0.25 Hz and a
    steady 440 Hz. Returns {track: dict(max_drift, hi_only_drift)} in cycles of the
    fundamental, where hi_only_drift is what float32 increments alone would give, plus
    samples, chunks and wall_s. Native only (numpy)."""
    import time

    import numpy as np

    from ..reference.ddsp_numpy import cycles
    from .scan import phase_cumsum

    def circular(a, b):
        d = np.abs(a - b) % 1.0
        return float(np.minimum(d, 1.0 - d).max())

    t0 = time.perf_counter()
    frames = int(seconds * sample_rate) // hop
    frame_rate = sample_rate / hop
    result = {}
    for track in ("vibrato", "steady"):
        prev, state, carry, hi_carry = np.zeros(3, np.float32), None, 0.0, 0.0
        drift = hi_drift = 0.0
        chunks = 0
        for start in range(0, frames, chunk_frames):
            count = min(chunk_frames, frames - start)
            t = (start + np.arange(count)) / frame_rate
            f0 = np.full(count, 440.0) if track == "steady" else 1050 + 950 * np.sin(2 * np.pi * 0.25 * t)
            ctrl = np.zeros((count, 3), np.float32)
            ctrl[:, 0], ctrl[:, 1], ctrl[:, 2] = f0, 1.0, 1.0
            rows = harmonic_rows(dev.tensor(ctrl), dev.tensor(prev), 1, sample_rate)
            inc = harmonic_increments(rows, hop, sample_rate)
            phase, state = phase_cumsum(inc, initial=state)
            got = dev.read_sync(phase).astype(np.float64)
            hi_inc = dev.read_sync(inc)[0].astype(np.float64)   # float32 increments alone
            inc.release()
            phase.release()
            # float64 oscillator: f0 linear between [prev, frames] as the kernel does
            fr = np.concatenate([prev[:1].astype(np.float64), ctrl[:, 0].astype(np.float64)])
            j = np.arange(hop) / hop
            f0n = (fr[:-1, None] + j * (fr[1:] - fr[:-1])[:, None]).ravel()
            ref = cycles(f0n / sample_rate, carry)
            carry = ref[-1]
            hi = cycles(hi_inc, hi_carry)
            hi_carry = hi[-1]
            drift = max(drift, circular((got[0] + got[1]) % 1.0, ref))
            hi_drift = max(hi_drift, circular(hi, ref))
            prev = ctrl[-1].copy()
            chunks += 1
        result[track] = dict(max_drift=drift, hi_only_drift=hi_drift)
    result.update(samples=frames * hop, chunks=chunks, wall_s=time.perf_counter() - t0)
    return result
