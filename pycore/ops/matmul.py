"""Matrix multiply: matmul / linear with a fused bias + activation epilogue.

    matmul(a, b, bias=None, act=None, trans_a=False, trans_b=False)
        a [..., M, K] (trans_a: [..., K, M]), b [..., K, N] (trans_b: [..., N, K]) or a
        2-D b shared by a's whole batch (or a 2-D a shared by b's batch); bias [N];
        act None | "relu" | "gelu" (exact erf form) | "tanh" | "sigmoid". -> [..., M, N]
    linear(x, weight, bias=None, act=None)
        PyTorch layout: x [..., in], weight [out, in] -> [..., out]

b / weight may be an "f16" tensor (half storage, float32 arithmetic). Kernels live in
kernels/matmul.wgsl and kernels/matmul_sg.wgsl (see their headers); operands whose inner
dimension or K is not a multiple of 4 are first zero-padded by kernels/matmul_pack.wgsl.

Kernel choice. What is fast differs wildly between adapters: on lavapipe (CPU, 2 cores)
register blocks without workgroup memory run 7x faster than the workgroup-tiled kernel
(32x32 blocks: ~20% of numpy/OpenBLAS at 1024^3), and where the device has subgroups
(natively) the subgroup kernel, 64x16 blocks whose A rows the 8 lanes of a subgroup
share, is another 1.5x faster (~30%), while on real GPUs tiling wins. So a few
*variants* (one kernel, different override constants) are timed the first time a shape
class is seen on an adapter, and the winner is cached in memory and, natively, in
~/.cache/stemtone/matmul_autotune.json. Natively this happens inside the first matmul
call; in the browser (where waiting needs `await`) call
`await autotune(dev, M, N)` at start-up, otherwise a per-adapter default is used.
STEMTONE_MATMUL_VARIANT=<name> forces one variant everywhere. Every variant computes the
same thing (float32 accumulation, different summation order only).
"""

from __future__ import annotations

import json
import os
import time
import weakref

from ..gpu.runtime import Tensor, ceil_div
from ..gpu.selfcheck import assert_close, check, flat, rand, rng
from . import LOOP_LIMIT, expect, expect_dtype, expect_loop_steps, same_device

ACTS = {None: 0, "relu": 1, "gelu": 2, "tanh": 3, "sigmoid": 4}

# name -> (entry point, override constants). "regRxC wW": register-blocked, each
# invocation an R x C block of C, W invocations per workgroup. "sgRxC wW": the same with
# the R rows shared by the 8 invocations of a subgroup (needs subgroups of 8; the block
# shrinks on a small C, _fit_sg). "tileT kK": workgroup memory tiling, a T x T tile per
# workgroup, K-slabs of K.
VARIANTS = {
    "sg64x16w16": ("mm_sg", {"BM4": 16, "BN4": 4, "WG": 16}),
    "reg32x32w16": ("mm_reg", {"BM4": 8, "BN4": 8, "WG": 16}),
    "reg16x32w16": ("mm_reg", {"BM4": 4, "BN4": 8, "WG": 16}),
    "reg16x16w16": ("mm_reg", {"BM4": 4, "BN4": 4, "WG": 16}),
    "reg8x8w16": ("mm_reg", {"BM4": 2, "BN4": 2, "WG": 16}),
    "reg4x32w16": ("mm_reg", {"BM4": 1, "BN4": 8, "WG": 16}),
    "reg4x16w32": ("mm_reg", {"BM4": 1, "BN4": 4, "WG": 32}),
    "reg32x8w16": ("mm_reg", {"BM4": 8, "BN4": 2, "WG": 16}),
    "reg8x8w64": ("mm_reg", {"BM4": 2, "BN4": 2, "WG": 64}),
    "reg4x4w64": ("mm_reg", {"BM4": 1, "BN4": 1, "WG": 64}),
    "reg4x16w64": ("mm_reg", {"BM4": 1, "BN4": 4, "WG": 64}),
    "reg16x4w64": ("mm_reg", {"BM4": 4, "BN4": 1, "WG": 64}),
    "tile64k16": ("mm_tiled", {"TT": 16, "TK4": 4}),
    "tile32k16": ("mm_tiled", {"TT": 8, "TK4": 4}),
}

# Shape classes, each with the problem it is timed on (M, N, K).
CLASSES = {
    "skinny": (4, 512, 512),   # M <= 8: matrix-vector like (RNN steps, batch 1)
    "narrow": (512, 4, 512),   # N <= 8
    "small": (64, 64, 256),    # M * N <= 64 * 64
    "large": (512, 512, 256),
}

# Candidates per adapter kind and class; the first one is the default before tuning.
CANDIDATES = {
    "cpu": {
        "skinny": ["reg4x32w16", "reg4x16w32"],
        "narrow": ["reg32x8w16", "reg16x16w16"],
        "small": ["reg8x8w16", "reg16x16w16", "sg64x16w16"],
        "large": ["sg64x16w16", "reg32x32w16"],
    },
    "gpu": {
        "skinny": ["reg4x16w64", "reg4x4w64"],
        "narrow": ["reg16x4w64", "reg4x4w64"],
        "small": ["reg4x4w64", "tile32k16"],
        "large": ["tile64k16", "tile32k16", "reg8x8w64"],
    },
}
# Problems below this many multiply-adds run untuned on a small variant that compiles
# fast (the skinny default when M <= 8): launch overhead dominates them anyway.
TINY = 1 << 21
TINY_VARIANT = {"cpu": "reg8x8w16", "gpu": "reg4x4w64"}
# Biggest blocks per adapter kind: used when smaller ones would need too many workgroups.
BIGGEST = {"cpu": "reg32x32w16", "gpu": "tile64k16"}

CACHE_VERSION = 2  # 2: the subgroup variant joined the candidates

# The kernel file of each entry point. mm_sg needs the "subgroup" feature, and a shader
# module is validated as a whole, so it lives in a file of its own.
FILES = {"mm_reg": "matmul", "mm_tiled": "matmul", "mm_sg": "matmul_sg"}
SUBGROUP_SIZE = 8  # the subgroup size kernels/matmul_sg.wgsl is written for

# Loop passes of one invocation (lavapipe stops loops after LOOP_LIMIT, kernels/common.wgsl):
# mm_reg runs K4 = K / 4 steps, then an epilogue of at most 32 x 9 passes; mm_sg runs K4
# steps (its epilogue is a pass of its own, without loops); mm_tiled runs K4 / TK4 slabs
# of 4 TK4 + 2 passes. Past that the tiled kernel gives way to REG_FALLBACK.
EPILOGUE_STEPS = 300
REG_FALLBACK = "reg8x8w64"


def _loop_steps(entry, consts, K4):
    if entry == "mm_reg":
        return K4 + EPILOGUE_STEPS
    if entry == "mm_sg":
        return K4 + 1
    return ceil_div(K4, consts["TK4"]) * (4 * consts["TK4"] + 2) + EPILOGUE_STEPS


def _expect_k(op, K, a, b):
    expect_loop_steps(op, _loop_steps("mm_reg", {}, ceil_div(K, 4)), f"a dot product of K={K} terms", a, b)


# --------------------------------------------------------------------------- validation


def _check_operands(op, a, b, bias, act, trans_a, trans_b):
    for name, t in (("a", a), ("b", b)):
        expect(op, isinstance(t, Tensor), f"{name} must be a Tensor, got {type(t).__name__}")
    if bias is not None:
        expect(op, isinstance(bias, Tensor), f"bias must be a Tensor or None, got {type(bias).__name__}")
    dev = same_device(op, a, b, bias)
    expect_dtype(op, a, "f32")
    expect_dtype(op, b, "f32", "f16")
    expect(op, act in ACTS, f"unknown act {act!r}; use one of {list(ACTS)}")
    expect(op, a.ndim >= 2 and b.ndim >= 2, "a and b need at least 2 dimensions", a, b)
    M, K = (a.shape[-1], a.shape[-2]) if trans_a else a.shape[-2:]
    Kb, N = (b.shape[-1], b.shape[-2]) if trans_b else b.shape[-2:]
    expect(op, K == Kb, f"inner dimensions differ (K = {K} for a, {Kb} for b)", a, b)
    ba, bb = a.shape[:-2], b.shape[:-2]
    expect(op, ba == bb or not ba or not bb,
           "batch dimensions differ (they must be equal, or one operand must be 2-D)", a, b)
    if bias is not None:
        expect_dtype(op, bias, "f32")
        expect(op, bias.shape == (N,), f"bias must have shape ({N},)", bias)
    _expect_k(op, K, a, b)
    return dev, M, N, K, ba or bb


# --------------------------------------------------------------------------- ops


def matmul(a, b, bias=None, act=None, trans_a=False, trans_b=False, *, variant=None):
    """act(a @ b + bias), batched; see the module docstring. `variant` forces a kernel
    variant (a name from VARIANTS) instead of the autotuned one."""
    dev, M, N, K, batch = _check_operands("matmul", a, b, bias, act, trans_a, trans_b)
    variant = variant or os.environ.get("STEMTONE_MATMUL_VARIANT") or None
    expect("matmul", variant is None or variant in VARIANTS,
           f"unknown variant {variant!r} (argument or STEMTONE_MATMUL_VARIANT); "
           f"use one of {sorted(VARIANTS)}")
    expect("matmul", variant is None or usable(dev, variant),
           f"variant {variant!r} needs subgroups of {SUBGROUP_SIZE}, which this device lacks")
    out = dev.empty((*batch, M, N))
    nb = shape_count(batch)
    if M == 0 or N == 0 or nb == 0:
        return out
    if b.ndim == 2 and a.ndim > 2 and not trans_a:  # shared B: one tall matrix, bigger blocks
        M, nb = M * nb, 1
    _matmul(dev, a, b, bias, out, M, N, K, nb, a.ndim > 2 and nb > 1, b.ndim > 2 and nb > 1,
            ACTS[act], trans_a, trans_b, variant)
    return out


def linear(x, weight, bias=None, act=None):
    """act(x @ weight.T + bias) with weight [out, in] (PyTorch layout), x [..., in]."""
    op = "linear"
    expect(op, isinstance(x, Tensor) and isinstance(weight, Tensor), "x and weight must be Tensors")
    expect(op, x.ndim >= 1 and weight.ndim == 2,
           "x must have >= 1 dimension and weight 2 ([out, in])", x, weight)
    expect(op, x.shape[-1] == weight.shape[1],
           f"x has {x.shape[-1]} input features, weight expects {weight.shape[1]}", x, weight)
    if bias is not None:
        expect(op, isinstance(bias, Tensor) and bias.shape == (weight.shape[0],),
               f"bias must be a Tensor of shape ({weight.shape[0]},)", bias)
    expect_dtype(op, x, "f32")
    expect_dtype(op, weight, "f32", "f16")
    _expect_k(op, weight.shape[1], x, weight)
    y = matmul(x.reshape(-1, x.shape[-1]), weight, bias, act, trans_b=True)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def shape_count(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _round4(n: int) -> int:
    return max(4, ceil_div(n, 4) * 4)


def _matmul(dev, a, b, bias, out, M, N, K, nb, batched_a, batched_b, act, trans_a, trans_b, variant):
    """Pad what must be padded, dispatch one kernel, crop. M, N, K, nb: per-matrix sizes
    and batch count as the kernel sees them."""
    Kp, Np = _round4(K), _round4(N)
    temps = []

    def operand(t, rows, cols, want_rows, want_cols, batched):
        """t as a [batch, want_rows, want_cols] float32 (or untouched) matrix."""
        if (rows, cols) == (want_rows, want_cols):
            return t
        n = nb if batched else 1
        padded = dev.empty((n * want_rows, want_cols))
        _repack(dev, t, padded, n, rows, cols, want_rows, want_cols)
        temps.append(padded)
        return padded

    if trans_a:  # storage [K, M]
        Mp = _round4(M)
        A = operand(a, K, M, Kp, Mp, batched_a)
        lda = Mp // 4
    else:        # storage [M, K]
        A = operand(a, M, K, M, Kp, batched_a)
        lda = Kp // 4
    if trans_b:  # storage [N, K]
        B = operand(b, N, K, N, Kp, batched_b)
        ldb = Kp // 4
    else:        # storage [K, N]
        B = operand(b, K, N, Kp, Np, batched_b)
        ldb = Np // 4
    if bias is not None and N != Np:
        bias = operand(bias, 1, N, 1, Np, False)
    C = out if N == Np else dev.empty((nb * M, Np))
    if C is not out:
        temps.append(C)

    name = variant or choose(dev, M, N, K)
    entry, consts = VARIANTS[name]
    if entry == "mm_sg":
        consts = _fit_sg(consts, M, N)
    gx = _groups_x(entry, consts, M, N)
    if gx > dev.max_groups:  # small blocks on a huge matrix: take the biggest ones
        entry, consts = VARIANTS[BIGGEST[adapter_kind(dev)]]
        gx = _groups_x(entry, consts, M, N)
    if _loop_steps(entry, consts, Kp // 4) > LOOP_LIMIT:  # a long K: the K loop of mm_reg is shorter
        entry, consts = VARIANTS[REG_FALLBACK]
        gx = _groups_x(entry, consts, M, N)
    consts = dict(consts, TRANS_A=int(trans_a), TRANS_B=int(trans_b))
    aliases = {"W": "f16"} if B.dtype == "f16" else None
    kernel = dev.kernel(FILES[entry], entry, consts=consts, aliases=aliases)
    gy = min(nb, dev.max_groups)
    size_a = (Kp if trans_a else M) * lda  # vec4s per matrix
    size_b = (N if trans_b else Kp) * ldb
    args = dict(a=A, b=B, bias=bias if bias is not None else A, c=C,
                M=M, N=N, K4=Kp // 4, lda=lda, ldb=ldb, ldc=Np // 4,
                sa=size_a if batched_a else 0, sb=size_b if batched_b else 0, sc=M * Np // 4,
                nbatch=nb, act=act, has_bias=int(bias is not None))
    dev.run(kernel, (gx, gy, ceil_div(nb, gy)), **args)
    if entry == "mm_sg" and (act or bias is not None):  # it stores raw sums: bias + act now
        dev.run(dev.kernel("matmul", "mm_epilogue", aliases=aliases), ceil_div(nb * M * Np // 4, 256), **args)
    if C is not out:
        _repack(dev, C, out, nb, M, Np, M, N)
    for t in temps:  # back to the pool now rather than at GC
        t.release()


def _fit_sg(consts, M, N):
    """A subgroup tile (4 BM4 rows x 32 BN4 columns) shrunk to a small C, so that its rows
    and its 8 lanes' columns are not mostly idle: BM4 in 4, 8, 16 and BN4 in 1, 2, 4
    (a few pipelines only)."""
    bm4 = 4 if M <= 16 else 8 if M <= 32 else 16
    bn4 = 1 if N <= 32 else 2 if N <= 64 else 4
    return dict(consts, BM4=min(consts["BM4"], bm4), BN4=min(consts["BN4"], bn4))


def _groups_x(entry, consts, M, N):
    if entry == "mm_reg":
        blocks = ceil_div(M, 4 * consts["BM4"]) * ceil_div(N, 4 * consts["BN4"])
        return ceil_div(blocks, consts["WG"])
    if entry == "mm_sg":  # a tile of 4 BM4 rows x 8 lanes * 4 BN4 columns per subgroup
        tiles = ceil_div(M, 4 * consts["BM4"]) * ceil_div(N, SUBGROUP_SIZE * 4 * consts["BN4"])
        return ceil_div(tiles, consts["WG"] // SUBGROUP_SIZE)
    tile = 4 * consts["TT"]
    return ceil_div(M, tile) * ceil_div(N, tile)


def _repack(dev, src, dst, nb, rows, cols, out_rows, out_cols):
    """dst[b, r, c] = src[b, r, c] inside src's [rows, cols], else 0."""
    aliases = {"W": "f16"} if src.dtype == "f16" else None
    kernel = dev.kernel("matmul_pack", "repack", aliases=aliases)
    total = nb * out_rows * out_cols
    dev.run(kernel, ceil_div(total, 256), x=src, y=dst, rows=out_rows, cols=out_cols,
            src_rows=rows, src_cols=cols, total=total)


# --------------------------------------------------------------------------- autotune

_CHOICES = {}            # (adapter, class) -> variant name
_FILE_LOADED = False
_SYNC = weakref.WeakKeyDictionary()  # dev -> 1-element tensor read back to wait for the GPU
_SUBGROUP = weakref.WeakKeyDictionary()  # dev -> subgroup size (0: no subgroups)


def subgroup_size(dev) -> int:
    """The device's subgroup size, 0 without the "subgroup" feature. Natively probed once
    (kernels/subgroup_probe.wgsl); in the browser 0, as the browser backend does not ask
    for subgroups."""
    if dev not in _SUBGROUP:
        size = 0
        if dev.backend == "native" and "subgroup" in dev.features:
            with dev.eager():  # probed once, outside any recording plan
                out = dev.empty((1,), dtype="u32")
                dev.run(dev.kernel("subgroup_probe", "main"), 1, out=out)
                size = int(_run_now(dev.read(out))[0])
        _SUBGROUP[dev] = size
    return _SUBGROUP[dev]


def usable(dev, name: str) -> bool:
    """Whether variant `name` runs on this device (mm_sg needs subgroups of 8)."""
    return VARIANTS[name][0] != "mm_sg" or subgroup_size(dev) == SUBGROUP_SIZE


def adapter_kind(dev) -> str:
    """"cpu" for software adapters (lavapipe / llvmpipe, SwiftShader), else "gpu"."""
    info = getattr(dev, "adapter_info", {}) or {}
    if str(info.get("adapter_type", "")).lower() == "cpu":
        return "cpu"
    text = dev.describe().lower()
    return "cpu" if any(s in text for s in ("llvmpipe", "lavapipe", "swiftshader", "software")) else "gpu"


def shape_class(M: int, N: int) -> str:
    if M <= 8:
        return "skinny"
    if N <= 8:
        return "narrow"
    return "small" if M * N <= 64 * 64 else "large"


def candidates(dev, M: int, N: int):
    """The variants timed for (M, N) on this device, the default first."""
    return [n for n in CANDIDATES[adapter_kind(dev)][shape_class(M, N)] if usable(dev, n)]


def all_variants():
    """Every variant any adapter may run (tests check each one)."""
    names = {n for kind in CANDIDATES.values() for c in kind.values() for n in c}
    names |= set(TINY_VARIANT.values()) | set(BIGGEST.values())
    return sorted(names)


def cache_path():
    root = os.environ.get("STEMTONE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "stemtone")
    return os.path.join(root, "matmul_autotune.json")


def _load_file():
    global _FILE_LOADED
    _FILE_LOADED = True
    for adapter, classes in _read_file().items():
        for cls, entry in classes.items():
            _CHOICES.setdefault((adapter, cls), entry["variant"])


def _read_file() -> dict:
    """{adapter: {class: {"variant": name, "ms": {...}}}} from the cache file, or {}."""
    try:
        with open(cache_path(), encoding="utf-8") as f:
            data = json.load(f)
        if data["version"] != CACHE_VERSION:
            return {}
        choices = data["choices"]
        if all(isinstance(e["variant"], str) for classes in choices.values() for e in classes.values()):
            return choices
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # missing, stale or damaged: tune again


def _save_file(adapter, cls, name, times):
    path = cache_path()
    data = {"version": CACHE_VERSION, "choices": _read_file()}
    data["choices"].setdefault(adapter, {})[cls] = {
        "variant": name, "ms": {k: round(v * 1e3, 3) for k, v in times.items()}}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs a re-tune next time


def choose(dev, M: int, N: int, K: int) -> str:
    """The variant for this problem: cached choice, else (natively) tune now, else the
    adapter's default."""
    kind, cls = adapter_kind(dev), shape_class(M, N)
    if M * N * K < TINY:
        return CANDIDATES[kind][cls][0] if cls == "skinny" else TINY_VARIANT[kind]
    if dev.backend == "native" and not _FILE_LOADED:
        _load_file()
    names = candidates(dev, M, N)
    name = _CHOICES.get((dev.describe(), cls))
    if name in names:
        return name
    if dev.backend == "native" and len(names) > 1:  # native reads never suspend: drive the coroutine here
        with dev.eager():  # timed once, outside any recording plan
            return _run_now(autotune(dev, M, N))
    return names[0]


def _run_now(coro):
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("matmul autotune had to wait for the GPU; call `await autotune(dev, M, N)` first")


async def sync(dev):
    """Wait until the GPU has finished everything submitted so far."""
    t = _SYNC.get(dev)
    if t is None:
        with dev.eager():
            t = _SYNC[dev] = dev.empty((1,))
    await dev.read(t)


async def autotune(dev, M: int, N: int, repeats: int = 5) -> str:
    """Time the candidates of (M, N)'s shape class on the class's own problem size,
    remember the fastest (and, natively, write it to the cache file). Returns its name.
    Candidates take turns and keep their best time, so that a burst of load from other
    processes does not decide the race."""
    kind, cls = adapter_kind(dev), shape_class(M, N)
    tm, tn, tk = CLASSES[cls]
    a, b = dev.empty((tm, tk)), dev.empty((tk, tn))  # zeros: values do not change timing
    runs = 2 if kind == "cpu" else 10                 # per timing, to dwarf the sync cost
    names = candidates(dev, M, N)
    for name in names:
        matmul(a, b, variant=name)  # compile, warm up
    await sync(dev)
    times = dict.fromkeys(names, float("inf"))
    for _ in range(repeats):
        for name in names:
            t0 = time.perf_counter()
            for _ in range(runs):
                matmul(a, b, variant=name)
            await sync(dev)
            times[name] = min(times[name], (time.perf_counter() - t0) / runs)
    name = min(times, key=times.get)
    _CHOICES[(dev.describe(), cls)] = name
    if dev.backend == "native":
        _save_file(dev.describe(), cls, name, times)
    return name


def bench_matmul(dev, M: int, N: int, K: int, repeats: int = 5) -> dict:
    """Native only: GFLOP/s of matmul (autotuned variant) vs numpy float32 a @ b on the
    same machine (best of `repeats` each). Needs numpy."""
    import numpy as np

    rs = np.random.default_rng(0)
    a = rs.standard_normal((M, K), dtype=np.float32)
    b = rs.standard_normal((K, N), dtype=np.float32)
    A, B = dev.tensor(a), dev.tensor(b)
    C = matmul(A, B)  # tunes (if needed) and compiles
    err = float(np.abs(C.numpy() - a @ b).max() / max(1e-30, float(np.abs(a @ b).max())))
    name = os.environ.get("STEMTONE_MATMUL_VARIANT") or choose(dev, M, N, K)
    # All GPU runs first: OpenBLAS threads keep spinning for a while after each call and
    # would steal the cores a CPU adapter (lavapipe) runs on.
    t_gpu = t_np = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(A, B)
        _run_now(sync(dev))
        t_gpu = min(t_gpu, time.perf_counter() - t0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        t_np = min(t_np, time.perf_counter() - t0)
    flops = 2.0 * M * N * K
    entry, consts = VARIANTS[name]
    return {
        "M": M, "N": N, "K": K, "adapter": dev.describe(),
        "wgsl_gflops": flops / t_gpu / 1e9, "numpy_gflops": flops / t_np / 1e9,
        "ratio": t_np / t_gpu, "config": {"variant": name, "entry": entry, **consts},
        "max_rel_err": err,
    }


# --------------------------------------------------------------------------- self-checks
# Pure-Python references (no numpy in the browser). Float32 sums of K <= 13 products of
# values in [-1, 1] carry rounding errors of a few 1e-7 (13 additions, partial sums of a
# few units, 6e-8 relative each), and the epilogue functions ~2e-7: rtol = atol = 1e-5.


def _ref_mm(a, b, M, N, K, bias=None, fn=None):
    out = []
    for i in range(M):
        for j in range(N):
            v = sum(a[i * K + k] * b[k * N + j] for k in range(K)) + (bias[j] if bias else 0.0)
            out.append(fn(v) if fn else v)
    return out


@check("matmul")
async def _check_matmul(dev):
    r = rng(1)
    M, N, K = 5, 7, 9
    a, b = rand(r, M * K), rand(r, K * N)
    got = await matmul(dev.tensor(a, (M, K)), dev.tensor(b, (K, N))).read()
    return assert_close("matmul", flat(got), _ref_mm(a, b, M, N, K), rtol=1e-5, atol=1e-5)


@check("matmul_batched")
async def _check_matmul_batched(dev):
    r = rng(2)
    nb, M, N, K = 3, 4, 6, 5
    a, b = rand(r, nb * M * K), rand(r, nb * K * N)
    # batched a @ batched b, given as b^T: b_t[n, k] = b[k, n]
    bt = [b[i * K * N + k * N + n] for i in range(nb) for n in range(N) for k in range(K)]
    got = flat(await matmul(dev.tensor(a, (nb, M, K)), dev.tensor(bt, (nb, N, K)), trans_b=True).read())
    want = [v for i in range(nb) for v in
            _ref_mm(a[i * M * K:(i + 1) * M * K], b[i * K * N:(i + 1) * K * N], M, N, K)]
    detail = assert_close("matmul_batched", got, want, rtol=1e-5, atol=1e-5)
    # 2-D b shared by the batch
    got = flat(await matmul(dev.tensor(a, (nb, M, K)), dev.tensor(b[:K * N], (K, N))).read())
    want = [v for i in range(nb) for v in _ref_mm(a[i * M * K:(i + 1) * M * K], b[:K * N], M, N, K)]
    assert_close("matmul_batched (shared b)", got, want, rtol=1e-5, atol=1e-5)
    return detail


@check("matmul_epilogue")
async def _check_matmul_epilogue(dev):
    import math

    r = rng(3)
    M, N, K = 3, 5, 13
    a, b, bias = rand(r, M * K), rand(r, K * N), rand(r, N)
    refs = {
        "relu": lambda v: max(v, 0.0),
        "gelu": lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))),
        "tanh": math.tanh,
        "sigmoid": lambda v: 1.0 / (1.0 + math.exp(-v)),
    }
    A, B, bias_t = dev.tensor(a, (M, K)), dev.tensor(b, (K, N)), dev.tensor(bias)
    details = []
    for act, fn in refs.items():
        got = flat(await matmul(A, B, bias_t, act).read())
        details.append(assert_close(f"matmul_epilogue {act}", got, _ref_mm(a, b, M, N, K, bias, fn),
                                    rtol=1e-5, atol=1e-5))
    return details[-1]


@check("matmul_f16")
async def _check_matmul_f16(dev):
    import struct

    r = rng(4)
    M, N, K = 6, 8, 12
    x, w = rand(r, M * K), rand(r, N * K)
    w16 = list(struct.unpack(f"<{N * K}e", struct.pack(f"<{N * K}e", *w)))  # the stored halves
    got = flat(await linear(dev.tensor(x, (M, K)), dev.tensor(w, (N, K), dtype="f16")).read())
    wt = [w16[n * K + k] for k in range(K) for n in range(N)]  # w16^T as [K, N]
    return assert_close("matmul_f16", got, _ref_mm(x, wt, M, N, K), rtol=1e-5, atol=1e-5)
