"""matmul / linear against float64 numpy references.

Tolerance: any float32 evaluation order of a K-term dot product satisfies
|got - exact| <= gamma_K * sum_k |a_ik b_kj| with gamma_K ~ K * 2^-24 (fused or not), so
we allow 2 * K * 2^-24 * (|a| @ |b|); the epilogue adds the error of one float32
function evaluation (~2e-7 relative, 1e-7 absolute for erf) times its slope (<= 1.13).
"""

import asyncio
import json
import math

import numpy as np
import pytest

from pycore.ops import LOOP_LIMIT
from pycore.ops import matmul as mm
from pycore.ops.matmul import linear, matmul

EPS = 2.0 ** -24


def ref_mm(a, b, ta=False, tb=False):
    a = np.swapaxes(a, -1, -2) if ta else a
    b = np.swapaxes(b, -1, -2) if tb else b
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return a64 @ b64, np.abs(a64) @ np.abs(b64), a.shape[-1]


def assert_mm(got, ref, absdot, K, act_slope=1.0):
    tol = act_slope * 2 * max(K, 1) * EPS * absdot + 1e-6 * (1 + np.abs(ref))
    assert got.shape == ref.shape
    bad = np.abs(got - ref) > tol
    assert not bad.any(), f"{bad.sum()} of {bad.size} values off; worst {np.abs(got - ref).max():.3e}"


ACT_REFS = {
    None: lambda v: v,
    "relu": lambda v: np.maximum(v, 0),
    "gelu": lambda v: 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2))),
    "tanh": np.tanh,
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
}

ODD = [(1, 1, 1), (3, 17, 65), (17, 3, 130), (65, 130, 17), (130, 65, 3), (1, 65, 130), (4, 8, 12)]


@pytest.mark.parametrize("M,N,K", ODD)
def test_matmul_odd_shapes(dev, rng, M, N, K):
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    got = matmul(dev.tensor(a), dev.tensor(b)).numpy()
    assert_mm(got, *ref_mm(a, b))


@pytest.mark.parametrize("ta,tb", [(False, True), (True, False), (True, True)])
def test_matmul_transposes(dev, rng, ta, tb):
    M, N, K = 19, 33, 42
    a = rng.standard_normal((2, K, M) if ta else (2, M, K), dtype=np.float32)
    b = rng.standard_normal((2, N, K) if tb else (2, K, N), dtype=np.float32)
    got = matmul(dev.tensor(a), dev.tensor(b), trans_a=ta, trans_b=tb).numpy()
    assert_mm(got, *ref_mm(a, b, ta, tb))


def test_matmul_batched_and_broadcast(dev, rng):
    a = rng.standard_normal((2, 3, 9, 21), dtype=np.float32)
    b = rng.standard_normal((2, 3, 21, 6), dtype=np.float32)
    assert_mm(matmul(dev.tensor(a), dev.tensor(b)).numpy(), *ref_mm(a, b))
    b2 = b[0, 0]  # 2-D b shared by the batch
    assert_mm(matmul(dev.tensor(a), dev.tensor(b2)).numpy(), *ref_mm(a, b2))
    # shared b with transposed a (no folding of the batch into M)
    at = np.ascontiguousarray(np.swapaxes(a, -1, -2))
    assert_mm(matmul(dev.tensor(at), dev.tensor(b2), trans_a=True).numpy(), *ref_mm(at, b2, ta=True))
    a2 = a[1, 2]  # 2-D a shared by b's batch
    assert_mm(matmul(dev.tensor(a2), dev.tensor(b)).numpy(), *ref_mm(a2, b))


def test_batch_beyond_one_grid_dimension(dev, rng):
    nb = 65_540  # > 65535 workgroups per dimension: the batch spills into grid z
    a = rng.standard_normal((nb, 2, 3), dtype=np.float32)
    b = rng.standard_normal((nb, 3, 4), dtype=np.float32)
    assert_mm(matmul(dev.tensor(a), dev.tensor(b)).numpy(), *ref_mm(a, b))


@pytest.mark.parametrize("act", list(ACT_REFS))
@pytest.mark.parametrize("with_bias", [False, True])
def test_matmul_epilogue(dev, rng, act, with_bias):
    M, N, K = 13, 10, 23
    a = rng.standard_normal((M, K), dtype=np.float32) * 0.5
    b = rng.standard_normal((K, N), dtype=np.float32) * 0.5
    bias = rng.standard_normal(N, dtype=np.float32) if with_bias else None
    got = matmul(dev.tensor(a), dev.tensor(b), None if bias is None else dev.tensor(bias), act).numpy()
    pre, absdot, K = ref_mm(a, b)
    if bias is not None:
        pre, absdot = pre + bias, absdot + np.abs(bias)
    assert_mm(got, ACT_REFS[act](pre), absdot, K, act_slope=1.13)


def test_gelu_tails(dev):
    # one-element products place the pre-activation anywhere, incl. both erf branches
    x = np.concatenate([np.linspace(-12, 12, 97), [-0.71, -0.7, 0.7, 0.71, 1e-4, -1e-4]]).astype(np.float32)
    one = dev.tensor(np.ones((1, 1), np.float32))
    got = matmul(dev.tensor(x.reshape(-1, 1)), one, act="gelu").numpy()[:, 0]
    want = ACT_REFS["gelu"](x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    for act in ("tanh", "sigmoid"):  # no overflow to NaN at large |x|
        got = matmul(dev.tensor(x.reshape(-1, 1) * 10), one, act=act).numpy()
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got[:, 0], ACT_REFS[act](x.astype(np.float64) * 10), rtol=1e-6, atol=2e-7)


def test_linear(dev, rng):
    x = rng.standard_normal((2, 5, 33), dtype=np.float32)
    w = rng.standard_normal((19, 33), dtype=np.float32)
    bias = rng.standard_normal(19, dtype=np.float32)
    got = linear(dev.tensor(x), dev.tensor(w), dev.tensor(bias), "tanh").numpy()
    pre, absdot, K = ref_mm(x, w, tb=True)
    assert got.shape == (2, 5, 19)
    assert_mm(got, np.tanh(pre + bias), absdot + np.abs(bias), K)
    v = linear(dev.tensor(x[0, 0]), dev.tensor(w)).numpy()  # 1-D input
    assert v.shape == (19,)
    assert_mm(v[None], *ref_mm(x[0, 0][None], w, tb=True))


def _f16_cases(d, rng):
    # (M, N, K): N % 4 and K % 4 == 0 uses the f16 kernel directly, the others pad first
    for M, N, K in [(7, 16, 24), (5, 9, 30)]:
        x = rng.standard_normal((M, K), dtype=np.float32)
        w = rng.standard_normal((N, K), dtype=np.float32)
        w16 = w.astype(np.float16).astype(np.float32)  # what the tensor stores
        bias = rng.standard_normal(N, dtype=np.float32)
        got = linear(d.tensor(x), d.tensor(w, dtype="f16"), d.tensor(bias), "relu").numpy()
        pre, absdot, K_ = ref_mm(x, w16, tb=True)
        assert_mm(got, np.maximum(pre + bias, 0), absdot + np.abs(bias), K_)
        wt = np.ascontiguousarray(w.T)  # matmul with an f16 b in [K, N] layout
        got = matmul(d.tensor(x), d.tensor(wt, dtype="f16")).numpy()
        assert_mm(got, *ref_mm(x, np.ascontiguousarray(w16.T)))


def test_f16_weights(dev, rng):
    assert dev.has_f16  # lavapipe has shader-f16; the f16 kernel path is really taken
    _f16_cases(dev, rng)


def test_f16_weights_without_shader_f16(rng):
    from pycore.gpu.native import NativeDevice

    d = NativeDevice(f16=False)
    assert not d.has_f16
    _f16_cases(d, rng)


@pytest.mark.parametrize("i,name", list(enumerate(mm.all_variants())))
def test_every_variant(dev, rng, i, name):
    """Each variant once (one pipeline each keeps this cheap), cycling through the
    transpose combinations, batched, with bias and an activation, on odd shapes."""
    if not mm.usable(dev, name):
        pytest.skip(f"{name} needs subgroups of {mm.SUBGROUP_SIZE}")
    ta, tb = [(False, False), (False, True), (True, False), (True, True)][i % 4]
    M, N, K = 37, 45, 19
    a = rng.standard_normal((2, K, M) if ta else (2, M, K), dtype=np.float32)
    b = rng.standard_normal((2, N, K) if tb else (2, K, N), dtype=np.float32)
    bias = rng.standard_normal(N, dtype=np.float32)
    got = matmul(dev.tensor(a), dev.tensor(b), dev.tensor(bias), "sigmoid", ta, tb, variant=name).numpy()
    pre, absdot, K = ref_mm(a, b, ta, tb)
    assert_mm(got, 1 / (1 + np.exp(-(pre + bias))), absdot + np.abs(bias), K)


# The subgroup kernel (kernels/matmul_sg.wgsl): each case a pipeline of its own, with
# tiles cut by the edges of C in rows and columns, K padded, and each shrunken tile size
# of _fit_sg: (M, N, K, trans_a, trans_b, batch, bias + act, f16 b) -> (BM4, BN4).
SG_CASES = [
    ((130, 200, 37, False, False, 1, "relu", False), (16, 4)),
    ((20, 50, 33, False, True, 3, "gelu", True), (8, 2)),    # linear with half weights
    ((12, 30, 16, True, True, 2, None, False), (4, 1)),
]


def test_subgroup_kernel_is_the_cpu_default(dev):
    """lavapipe has subgroups of 8 (an AVX2 vector), so large products get mm_sg."""
    assert mm.subgroup_size(dev) == mm.SUBGROUP_SIZE == 8
    assert mm.candidates(dev, 512, 512)[0] == "sg64x16w16"
    for (M, N, *_), fit in SG_CASES:
        got = mm._fit_sg(mm.VARIANTS["sg64x16w16"][1], M, N)
        assert (got["BM4"], got["BN4"]) == fit


@pytest.mark.parametrize("case", [c for c, _ in SG_CASES], ids=lambda c: "x".join(map(str, c[:3])))
def test_subgroup_kernel(dev, rng, case):
    M, N, K, ta, tb, nb, act, half = case
    a = rng.standard_normal((nb, K, M) if ta else (nb, M, K), dtype=np.float32)
    b = rng.standard_normal((nb, N, K) if tb else (nb, K, N), dtype=np.float32)
    bias = rng.standard_normal(N, dtype=np.float32) if act else None
    if half:
        b = b.astype(np.float16).astype(np.float32)  # exactly what the f16 tensor holds
    B = dev.tensor(b, dtype="f16" if half else "f32")
    got = matmul(dev.tensor(a), B, None if bias is None else dev.tensor(bias), act, ta, tb,
                 variant="sg64x16w16").numpy()
    pre, absdot, K_ = ref_mm(a, b, ta, tb)
    if bias is not None:
        pre, absdot = pre + bias, absdot + np.abs(bias)
    assert_mm(got, ACT_REFS[act](pre), absdot, K_, act_slope=1.13)
    if nb > 1 and not ta:  # 2-D b shared by the batch: one tall matrix (M * nb rows)
        got = matmul(dev.tensor(a), dev.tensor(b[0], dtype=B.dtype), trans_b=tb, variant="sg64x16w16").numpy()
        assert_mm(got, *ref_mm(a, b[0], tb=tb))


def test_subgroup_kernel_with_the_longest_k(dev, rng):
    # K4 + 1 loop passes per invocation: the longest K matmul accepts is no problem
    K = 4 * (LOOP_LIMIT - mm.EPILOGUE_STEPS)
    a = rng.random((4, K), dtype=np.float32)
    b = rng.random((K, 5), dtype=np.float32)
    a[:, -1] = b[-1, :] = 1000.0                    # the last term dominates
    got = matmul(dev.tensor(a), dev.tensor(b), variant="sg64x16w16").numpy()
    want = a.astype(np.float64) @ b
    assert np.all(np.abs(got - want) <= K * EPS * want)  # positive terms: worst-case f32 sum bound


def test_subgroup_variant_needs_subgroups_of_8(dev, monkeypatch):
    monkeypatch.setitem(mm._SUBGROUP, dev, 4)  # e.g. llvmpipe on a CPU with 128-bit vectors
    assert mm.candidates(dev, 512, 512) == ["reg32x32w16"]
    a = dev.tensor(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="matmul: variant 'sg64x16w16' needs subgroups of 8"):
        matmul(a, a, variant="sg64x16w16")


def test_variant_env_override(dev, rng, monkeypatch):
    a = rng.standard_normal((9, 8), dtype=np.float32)
    b = rng.standard_normal((8, 11), dtype=np.float32)
    monkeypatch.setenv("STEMTONE_MATMUL_VARIANT", "reg4x16w32")
    assert_mm(matmul(dev.tensor(a), dev.tensor(b)).numpy(), *ref_mm(a, b))
    monkeypatch.setenv("STEMTONE_MATMUL_VARIANT", "no-such-variant")
    with pytest.raises(ValueError, match="matmul"):
        matmul(dev.tensor(a), dev.tensor(b))


def test_autotune_cache(dev, rng, tmp_path, monkeypatch):
    monkeypatch.setenv("STEMTONE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("STEMTONE_MATMUL_VARIANT", raising=False)
    monkeypatch.setattr(mm, "_CHOICES", {})
    monkeypatch.setattr(mm, "_FILE_LOADED", False)
    M, N, K = 40, 50, 2048  # the "small" class, above the untuned-tiny threshold
    assert mm.shape_class(M, N) == "small" and M * N * K >= mm.TINY
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    got = matmul(dev.tensor(a), dev.tensor(b)).numpy()  # tunes on first use
    assert_mm(got, *ref_mm(a, b))
    key = (dev.describe(), "small")
    chosen = mm._CHOICES[key]
    assert chosen in mm.candidates(dev, M, N)
    data = json.loads((tmp_path / "matmul_autotune.json").read_text())
    entry = data["choices"][dev.describe()]["small"]
    assert entry["variant"] == chosen and set(entry["ms"]) == set(mm.candidates(dev, M, N))
    # a new process reads the file instead of tuning again
    monkeypatch.setattr(mm, "_CHOICES", {})
    monkeypatch.setattr(mm, "_FILE_LOADED", False)
    monkeypatch.setattr(mm, "autotune", lambda *a, **k: pytest.fail("re-tuned despite the cache"))
    assert mm.choose(dev, M, N, K) == chosen
    # a damaged file is ignored (and replaced by the next tuning)
    (tmp_path / "matmul_autotune.json").write_text(f'{{"version": {mm.CACHE_VERSION}, "choices": [1, 2]}}')
    monkeypatch.setattr(mm, "_CHOICES", {})
    monkeypatch.setattr(mm, "_FILE_LOADED", False)
    mm._load_file()
    assert mm._CHOICES == {}


def test_adapter_kind_and_classes(dev):
    assert mm.adapter_kind(dev) == "cpu"  # lavapipe
    assert mm.shape_class(1, 1000) == "skinny" and mm.shape_class(1000, 3) == "narrow"
    assert mm.shape_class(64, 64) == "small" and mm.shape_class(65, 64) == "large"
    for kind in mm.CANDIDATES.values():
        for names in kind.values():
            assert set(names) <= set(mm.VARIANTS)


def test_choose_in_the_browser(monkeypatch):
    """Without synchronous reads (browser) an untuned class gets the adapter's default;
    a tuned one (await autotune(...)) gets the remembered choice."""
    class Stub:
        backend = "browser"
        adapter_info = {}

        def __init__(self, text):
            self.text = text

        def describe(self):
            return self.text

    monkeypatch.setattr(mm, "_CHOICES", {})
    sw, gpu = Stub("browser: google / swiftshader"), Stub("browser: nvidia / ampere")
    assert mm.choose(sw, 512, 512, 512) == mm.candidates(sw, 512, 512)[0] == "reg32x32w16"  # no subgroups
    assert mm.choose(gpu, 512, 512, 512) == mm.CANDIDATES["gpu"]["large"][0]
    assert mm.choose(gpu, 1, 512, 512) == mm.CANDIDATES["gpu"]["skinny"][0]
    mm._CHOICES[(gpu.describe(), "large")] = "tile32k16"
    assert mm.choose(gpu, 512, 512, 512) == "tile32k16"
    assert mm.choose(gpu, 16, 16, 16) == mm.TINY_VARIANT["gpu"]  # tiny: never tuned


def test_errors(dev):
    a = dev.tensor(np.zeros((4, 5), np.float32))
    b = dev.tensor(np.zeros((6, 3), np.float32))
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ"):
        matmul(a, b)
    with pytest.raises(ValueError, match=r"matmul: dtype"):
        matmul(dev.tensor(np.zeros((4, 5), np.int32), dtype="i32"), dev.tensor(np.zeros((5, 3), np.float32)))
    with pytest.raises(ValueError, match=r"matmul: dtype"):
        matmul(a, dev.tensor(np.zeros((5, 3), np.uint32), dtype="u32"))
    b53 = dev.tensor(np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"matmul: bias must have shape \(3,\)"):
        matmul(a, b53, bias=dev.tensor(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match=r"matmul: unknown act"):
        matmul(a, b53, act="swish")
    with pytest.raises(ValueError, match=r"matmul: a and b need at least 2"):
        matmul(dev.tensor(np.zeros(5, np.float32)), b53)
    with pytest.raises(ValueError, match=r"matmul: batch dimensions differ"):
        matmul(dev.tensor(np.zeros((2, 4, 5), np.float32)), dev.tensor(np.zeros((3, 5, 3), np.float32)))
    with pytest.raises(ValueError, match=r"matmul: unknown variant"):
        matmul(a, b53, variant="reg3x3")
    with pytest.raises(ValueError, match=r"linear: x has 5 input features, weight expects 3"):
        linear(a, dev.tensor(np.zeros((2, 3), np.float32)))
    with pytest.raises(ValueError, match=r"linear: bias must be"):
        linear(a, dev.tensor(np.zeros((2, 5), np.float32)), dev.tensor(np.zeros(5, np.float32)))


def test_zero_sizes(dev):
    a = dev.tensor(np.zeros((0, 5), np.float32))
    b = dev.tensor(np.ones((5, 3), np.float32))
    assert matmul(a, b).shape == (0, 3)
    # K = 0: an empty sum, so the result is act(bias)
    bias = np.array([-1.0, 0.5, 2.0], np.float32)
    got = matmul(dev.tensor(np.zeros((2, 0), np.float32)), dev.tensor(np.zeros((0, 3), np.float32)),
                 dev.tensor(bias), "relu").numpy()
    np.testing.assert_array_equal(got, np.maximum(np.tile(bias, (2, 1)), 0))


@pytest.mark.parametrize("name", ["matmul", "matmul_batched", "matmul_epilogue", "matmul_f16"])
def test_selfchecks(dev, name):
    from pycore.gpu.selfcheck import CHECKS

    asyncio.run(CHECKS[name](dev))
