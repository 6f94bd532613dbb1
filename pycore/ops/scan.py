"""Prefix sums: `cumsum` and the oscillator-phase scan `phase_cumsum` (kernels/scan.wgsl).

    y = cumsum(x, axis=-1)                        inclusive float32 scan along any axis
    phase, state = phase_cumsum(freq, axis=-1, initial=None)
                                                  phase[i] = (initial + sum freq[..i]) mod 1

`phase_cumsum` takes per-sample phase increments in cycles (f / sample_rate) and returns
the wrapped phase in [0, 1) plus the final phase of every line, so a long track is
processed in chunks (a binding holds at most 128 MiB = 33.5 M floats):

    state = None
    for chunk in chunks:                          # each a Tensor [..., T_chunk]
        phase, state = phase_cumsum(chunk, initial=state)

Phase sums run in exact 64-bit fixed point (a phase accumulator, wrapping modulo one cycle
for free), so the only error is rounding each output phase to float32 (<= 6e-8 cycles)
plus that of the float32 state once per chunk: hours of audio stay within ~1e-6 cycles
of a float64 reference (see the header of kernels/scan.wgsl).
"""

from __future__ import annotations

import array
import math

from ..gpu.runtime import ceil_div, shape_size
from ..gpu.selfcheck import check, flat, rand, rng
from . import expect, expect_dtype

# (threads per workgroup, consecutive elements per thread), per adapter class (measured on
# lavapipe at 8 M elements: (32, 64) is 2.8x faster than (256, 8), because CPU drivers pay
# for every barrier, while on GPUs (256, 8) is the usual choice: more threads, fewer serial
# elements each). Tests run both.
CONFIGS = {"cpu": (32, 64), "gpu": (256, 8)}


def is_cpu_adapter(dev) -> bool:
    """lavapipe / llvmpipe / SwiftShader: WebGPU running on the CPU."""
    info = dev.adapter_info
    text = " ".join(str(info.get(k, "")) for k in ("vendor", "architecture", "device")).lower()
    return str(info.get("adapter_type", "")).lower() == "cpu" or any(
        w in text for w in ("llvmpipe", "lavapipe", "swiftshader"))


def scan_config(dev):
    """(WG, ITEMS) used on this device."""
    return CONFIGS["cpu" if is_cpu_adapter(dev) else "gpu"]


def _split(op, x, axis):
    """(axis, outer, n, inner) of x viewed as [outer, n, inner]."""
    expect(op, x.ndim >= 1, "needs at least one dimension", x)
    expect(op, isinstance(axis, int) and -x.ndim <= axis < x.ndim, f"axis {axis!r} out of range", x)
    axis %= x.ndim
    return axis, shape_size(x.shape[:axis]), x.shape[axis], shape_size(x.shape[axis + 1:])


def _scan(dev, x, out, n, inner, lines, mode, init=None, fixed=False):
    """Record an inclusive scan of x into out (both viewed as [outer, n, inner]).

    mode "cumsum": float32 sums.
    mode "phase":  fixed-point phase scan; fixed=False reads float32 increments and writes
                 float32 phases, fixed=True reads and writes (lo, hi) u32 pairs (the upper
                 levels); init: optional f32 Tensor [lines] of initial phases.
    """
    wg, items = scan_config(dev)
    consts = {"WG": wg, "ITEMS": items}
    prefix_kind = "phase_" if mode == "phase" else ""
    nblocks = ceil_div(n, wg * items)
    args = dict(n=n, inner=inner, nblocks=nblocks, lines=lines, src_fixed=int(fixed), dst_fixed=int(fixed))
    scan_add = dev.kernel("scan", prefix_kind + "scan_add", consts=consts)
    if nblocks == 1:
        dev.run(scan_add, lines, src=x, dst=out, carry=init if init is not None else x,
                has_carry=int(init is not None), cstride=1, **args)
        return
    # 1. block totals, one row per line: [initial value or 0, total_0, total_1, ...]
    if mode == "phase":
        sums_shape, dtype = (lines, nblocks + 1, 2), "u32"    # (lo, hi) fixed-point pairs
    else:
        sums_shape, dtype = (lines, nblocks + 1), "f32"
    sums = dev.empty(sums_shape, dtype)
    dev.run(dev.kernel("scan", prefix_kind + "block_sums", consts=consts), lines * nblocks,
            src=x, dst=sums, carry=init if init is not None else x,
            has_carry=int(init is not None), cstride=0, **args)
    # 2. inclusive scan of each row: column blk = everything before block blk
    prefix = dev.empty(sums_shape, dtype)
    _scan(dev, sums, prefix, nblocks + 1, 1, lines, mode, fixed=mode == "phase")
    # 3. rescan every block starting from its prefix
    dev.run(scan_add, lines * nblocks, src=x, dst=out, carry=prefix,
            has_carry=2, cstride=nblocks + 1, **args)


def cumsum_error_bound(dev, n):
    """Most float32 adds an input passes through on its way to any output of a length-n
    cumsum on dev: |error| <= cumsum_error_bound(dev, n) * 2^-24 * sum(|x|). A guaranteed
    bound (serial adds in a thread + Hillis-Steele steps + the carry, per level), not a
    typical error, which is far smaller."""
    wg, items = scan_config(dev)
    levels = 1
    while n > wg * items:
        n, levels = ceil_div(n, wg * items) + 1, levels + 1
    return levels * (2 * items + int(math.log2(wg)) + 1)


def cumsum(x, axis=-1):
    """Inclusive cumulative sum of a float32 tensor along `axis` (like np.cumsum)."""
    expect_dtype("cumsum", x, "f32")
    axis, outer, n, inner = _split("cumsum", x, axis)
    out = x.dev.empty(x.shape)
    if x.size:
        _scan(x.dev, x, out, n, inner, outer * inner, "cumsum")
    return out


def phase_state_shape(shape, axis=-1):
    """Shape of phase_cumsum's state for an input shape: the axis kept with length 1."""
    axis %= len(shape)
    return tuple(shape[:axis]) + (1,) + tuple(shape[axis + 1:])


def phase_cumsum(freq, axis=-1, initial=None):
    """Oscillator phase: (initial + cumsum(freq)) mod 1, summed exactly in fixed point.

    freq:    f32 Tensor of per-sample phase increments in cycles (frequency / sample rate).
    initial: None (phase 0) or the `state` returned by the previous chunk, an f32 Tensor of
             shape phase_state_shape(freq.shape, axis) (the axis kept with length 1).
    Returns (phase, state): phase has freq's shape, values in [0, 1); state holds the
    last phase of every line, to pass as `initial` for the next chunk. Increments that
    are inf or NaN count as 0.
    """
    op = "phase_cumsum"
    expect_dtype(op, freq, "f32")
    axis, outer, n, inner = _split(op, freq, axis)
    expect(op, n >= 1, "the scanned axis is empty", freq)
    state_shape = phase_state_shape(freq.shape, axis)
    if initial is not None:
        expect_dtype(op, initial, "f32")
        expect(op, initial.dev is freq.dev, "initial lives on another device", freq, initial)
        expect(op, initial.shape == state_shape,
               f"initial must have shape {state_shape} (freq's shape with the axis kept as 1)",
               freq, initial)
    dev, lines = freq.dev, outer * inner
    phase = dev.empty(freq.shape)
    state = dev.empty(state_shape)
    if lines == 0:
        return phase, state
    _scan(dev, freq, phase, n, inner, lines, "phase", init=initial)
    wg, items = scan_config(dev)
    dev.run(dev.kernel("scan", "take_last", consts={"WG": wg, "ITEMS": items}), ceil_div(lines, wg),
            src=phase, dst=state, carry=phase, n=n, inner=inner, nblocks=1, lines=lines,
            has_carry=0, cstride=0, src_fixed=0, dst_fixed=0)
    return phase, state


# ---------------------------------------------------------------- benchmark (native only)


def vibrato_increments(start, count, sr, lo=100.0, hi=2000.0, rate=0.25):
    """Phase increments (cycles per sample, float32) of a vibrato sweeping lo..hi Hz at
    `rate` Hz, for samples start .. start + count. Native only (numpy)."""
    import numpy as np

    t = (start + np.arange(count, dtype=np.float64)) / sr
    f = (lo + hi) / 2 + (hi - lo) / 2 * np.sin(2 * np.pi * rate * t)
    return (f / sr).astype(np.float32)


def bench_phase_drift(dev, seconds=3600, sr=48000, chunk=1 << 24):
    """Phase drift over a long track (vibrato 100..2000 Hz), processed in chunks of `chunk`
    samples with the phase state carried across chunks, against a float64 reference.

    Returns dict(max_drift, naive_f32_drift, samples, chunks, wall_s): the largest circular
    distance in cycles of phase_cumsum, and of a naive float32 running sum
    (np.cumsum(dtype=float32) mod 1), from the float64 phase. Native only (numpy).
    """
    import time

    import numpy as np

    def circular(a, b):
        d = np.abs(a - b) % 1.0
        return float(np.minimum(d, 1.0 - d).max())

    t0 = time.perf_counter()
    total = int(seconds * sr)
    ref_carry, naive_carry, state = 0.0, np.float32(0.0), None
    drift = naive = 0.0
    chunks = 0
    for start in range(0, total, chunk):
        inc = vibrato_increments(start, min(chunk, total - start), sr)
        x = dev.tensor(inc)
        phase, state = phase_cumsum(x, initial=state)
        ref = (ref_carry + np.cumsum(inc, dtype=np.float64)) % 1.0
        ref_carry = ref[-1]
        run = np.cumsum(np.concatenate([[naive_carry], inc]), dtype=np.float32)[1:]
        naive_carry = run[-1]
        got = dev.read_sync(phase)
        drift = max(drift, circular(got.astype(np.float64), ref))
        naive = max(naive, circular(run.astype(np.float64) % 1.0, ref))
        x.release()
        phase.release()
        chunks += 1
    return dict(max_drift=drift, naive_f32_drift=naive, samples=total, chunks=chunks,
                wall_s=time.perf_counter() - t0)


# ---------------------------------------------------------------- self-checks


def _f32(xs):
    """Round Python floats to float32, so references sum exactly what the GPU sees."""
    return list(array.array("f", xs))


def _cumsum_ref(xs, outer, n, inner):
    """float64 cumsum and the running sum of |x| (the scale of the float32 error bound)."""
    out, mag = [0.0] * len(xs), [0.0] * len(xs)
    for o in range(outer):
        for k in range(inner):
            acc = total = 0.0
            for i in range(n):
                j = (o * n + i) * inner + k
                acc += xs[j]
                total += abs(xs[j])
                out[j], mag[j] = acc, total
    return out, mag


@check("cumsum")
async def _check_cumsum(dev):
    r = rng(11)
    details = []
    for shape, axis in (((3, 37, 5), 1), ((2, 4500), -1)):  # strided; 3 blocks per line
        xs = _f32(rand(r, shape_size(shape)))
        got = flat(await cumsum(dev.tensor(xs, shape), axis).read())
        ax = axis % len(shape)
        want, mag = _cumsum_ref(xs, shape_size(shape[:ax]), shape[ax], shape_size(shape[ax + 1:]))
        tol = cumsum_error_bound(dev, shape[ax]) * 2.0**-24  # valid bound, see cumsum_error_bound
        for i, (g, w, m) in enumerate(zip(got, want, mag)):
            if not abs(g - w) <= tol * m:
                raise AssertionError(f"cumsum {shape} axis {axis}: {g} at {i}, expected {w}")
        details.append(f"{shape}: max err {max(abs(g - w) for g, w in zip(got, want)):.1e}")
    return "; ".join(details)


def _circular(a, b):
    d = (a - b) % 1.0
    return min(d, 1.0 - d)


@check("phase_cumsum")
async def _check_phase_cumsum(dev):
    r = rng(12)
    n = 5000  # 3 blocks (both configs): exercises block sums, their scan and the carried initial phase
    incs = _f32(rand(r, 2 * n, -0.49, 0.49))
    init = _f32([0.75, 0.1])
    phase, state = phase_cumsum(dev.tensor(incs, (2, n)), initial=dev.tensor(init, (2, 1)))
    got, last = flat(await phase.read()), flat(await state.read())
    want = []
    for row in range(2):
        acc = init[row]
        for i in range(n):
            acc = (acc + incs[row * n + i]) % 1.0  # float64: error ~1e-13 after 5000 adds
            want.append(acc)
    # fixed-point sums are exact; each output rounds once to float32: <= 2^-24 cycles
    worst = max(_circular(g, w) for g, w in zip(got, want))
    if worst > 2.0**-23 or not all(0.0 <= g < 1.0 for g in got):
        raise AssertionError(f"phase_cumsum: max circular error {worst:.2e} cycles (or out of [0, 1))")
    if last != [got[n - 1], got[2 * n - 1]]:
        raise AssertionError(f"phase_cumsum: state {last} is not the last phase {[got[n - 1], got[-1]]}")
    return f"max circular err {worst:.2e} cycles over {2 * n} values"
