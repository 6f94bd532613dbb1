"""The per-invocation loop limit of lavapipe (kernels/common.wgsl): Mesa's CPU Vulkan
driver silently ends an invocation's loops after 65,535 passes in total. Ops whose loops
grow with the input either split the work over dispatches (conv: tests/test_conv.py;
attention: here) or refuse larger shapes with a ValueError before anything is recorded.

Here: the driver behaviour itself, attention over key sequences far past one dispatch,
every op's refusal, and shapes right at each op's bound that must still be computed
correctly (so the bounds are not too generous).
"""

import math

import numpy as np
import pytest

from pycore.ops import LOOP_LIMIT
from pycore.ops import attention as A
from pycore.ops.activations import softmax
from pycore.ops.ddsp import harmonic_bank, harmonic_rows, spectral_mac
from pycore.ops.loudness import weighted_power_db
from pycore.ops.matmul import linear, matmul
from pycore.ops.norm import group_norm, layer_norm
from pycore.ops.pitch import crepe_frames
from pycore.ops.pool import max_pool2d
from pycore.ops.rnn import gru, lstm
from pycore.ops.spectral import istft, stft
from pycore.ops.spectral_mask import overlap_finish, ratio_masks

EPS = 2.0**-24

# ---------------------------------------------------------------------------- the driver

LOOPS = """
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(1)
fn count(@builtin(workgroup_id) wid: vec3<u32>) {
    var c = 0u;
    for (var i = 0u; i < p.n; i++) { c += 1u; }
    out[0] = c;
}
"""


def test_what_the_kernels_are_written_for(dev, tmp_path, monkeypatch):
    """Documents the limit the kernels respect: on lavapipe a 70,000-step loop stops at
    65,535 (other drivers run it to the end). If this fails on lavapipe, the limit has
    changed: update kernels/common.wgsl and pycore.ops.LOOP_LIMIT."""
    from pycore.gpu import runtime

    (tmp_path / "loops.wgsl").write_text(LOOPS)
    monkeypatch.setattr(runtime, "KERNEL_DIRS", [str(tmp_path)] + runtime.KERNEL_DIRS)
    out = dev.empty((1,), dtype="u32")
    for n in (LOOP_LIMIT, 70000):
        dev.run(dev.kernel("loops", "count"), 1, out=out, n=n)
        got = int(out.numpy()[0])
        if "llvmpipe" in dev.describe().lower():
            assert got == min(n, LOOP_LIMIT)
        else:
            assert got == n


# ---------------------------------------------------------------------------- attention


def attention_ref(q, k, v, mask=None, causal=False):
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s + mask
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v, s


def attention_tol(q, k, v, s):
    """The error model of tests/test_attention.py: f32 scores of D terms (ds), exp good to
    3 + 2|t| ulp, about Lk roundings in the running sums; all times max|v| (the output
    is a convex combination of v's rows)."""
    d, lk = q.shape[-1], k.shape[-2]
    qk = np.abs(q.astype(np.float64)) @ np.swapaxes(np.abs(k.astype(np.float64)), -1, -2) / math.sqrt(d)
    ds = (d + 2) * EPS * qk.max(axis=-1, keepdims=True)
    spread = np.where(np.isfinite(s), s - s.max(axis=-1, keepdims=True), 0.0)
    exp_err = (3 + 2 * np.abs(spread).max(axis=-1, keepdims=True)) * 2 * EPS
    return np.abs(v).max() * (2 * ds + exp_err + (lk + 8) * EPS)


def attention_dispatches(dev, *args, **kw):
    dev.flush()
    A.scaled_dot_product_attention(*args, **kw)
    n = [k.label for k in dev.pending_kernels()].count("attention:attention")
    dev.flush()
    return n


def test_attention_over_more_keys_than_one_dispatch(dev, rng):
    # 20,000 keys: one invocation would need ~280 passes per 64-key tile (D = 16,
    # Dv = 70), 87,500 in all. The best-matching keys sit at the very end, where a
    # truncated loop would never get.
    lq, lk, d, dv = 3, 20000, 16, 70
    q = rng.standard_normal((2, lq, d)).astype(np.float32)
    k = rng.standard_normal((2, lk, d)).astype(np.float32)
    v = rng.standard_normal((2, lk, dv)).astype(np.float32)
    k[:, -5:] = 3 * q[:, :1]
    mask = rng.standard_normal((lq, lk)).astype(np.float32)
    qt, kt, vt, mt = dev.tensor(q), dev.tensor(k), dev.tensor(v), dev.tensor(mask)
    assert attention_dispatches(dev, qt, kt, vt, mask=mt) == math.ceil(lk / A.keys_per_dispatch(d, dv)) > 1
    want, s = attention_ref(q, k, v, mask)
    got = A.scaled_dot_product_attention(qt, kt, vt, mask=mt).numpy()
    assert np.all(np.abs(got - want) <= attention_tol(q, k, v, s))


@pytest.mark.parametrize("causal", [False, True])
def test_attention_split_into_many_dispatches(dev, rng, monkeypatch, causal):
    # A tiny loop budget: one 64-key tile per dispatch, so every row resumes from the
    # stored (max, sum) 5 times; causal rows skip the dispatches past their last key.
    monkeypatch.setattr(A, "MAX_LOOP_STEPS", 1)
    lq, lk, d, dv = 300, 300, 5, 130
    q = rng.standard_normal((2, lq, d)).astype(np.float32)
    k = rng.standard_normal((2, lk, d)).astype(np.float32)
    v = rng.standard_normal((2, lk, dv)).astype(np.float32)
    mask = None if causal else rng.standard_normal((2, lq, lk)).astype(np.float32)
    qt, kt, vt = dev.tensor(q), dev.tensor(k), dev.tensor(v)
    mt = None if mask is None else dev.tensor(mask)
    assert attention_dispatches(dev, qt, kt, vt, mask=mt, is_causal=causal) == 5
    want, s = attention_ref(q, k, v, mask, causal)
    got = A.scaled_dot_product_attention(qt, kt, vt, mask=mt, is_causal=causal).numpy()
    assert np.all(np.abs(got - want) <= attention_tol(q, k, v, s))


def test_short_attention_is_one_dispatch(dev, rng):
    q, k, v = (dev.tensor(rng.standard_normal((4, 64)).astype(np.float32)) for _ in range(3))
    assert attention_dispatches(dev, q, k, v) == 1


# ---------------------------------------------------------------------------- refusals


def refused_calls(dev):
    """(op, call, words): shapes whose kernel loops would pass the limit. Empty tensors:
    the checks come before any dispatch, so their contents are never read."""
    e = dev.empty
    return [
        ("softmax", lambda: softmax(e((1, 2_100_000))), "softmax over 2100000 values"),
        ("layer_norm", lambda: layer_norm(e((1, 1_400_000)), 1_400_000), "rows of 1400000"),
        ("group_norm", lambda: group_norm(e((1, 4, 350_000)), 1), "rows of 1400000"),
        ("max_pool2d", lambda: max_pool2d(e((1, 1, 1, 70_000)), (1, 70_000)), "(1, 70000) window"),
        ("max_pool2d", lambda: max_pool2d(e((1, 1, 300, 300)), 300), "(300, 300) window"),
        ("stft", lambda: stft(e((40_000,)), 65_536), "direct DFT of n_fft=65536"),
        ("stft", lambda: stft(e((80_000,)), 70_001, hop=70_001), "direct DFT of n_fft=70001"),
        ("istft", lambda: istft(e((32_769, 1, 2)), 65_536, hop=1), "n_fft=65536 with hop=1"),
        ("istft", lambda: istft(e((65_537, 1, 2)), 131_072, hop=131_072), "inverse DFT of n_fft=131072"),
        ("weighted_power_db", lambda: weighted_power_db(e((65_535, 1, 2)), e((65_535,))), "65535 bins"),
        ("overlap_finish", lambda: overlap_finish(e((2, 10)), None, 0, 10, 0, None, 70_000, 1, mix=2),
         "n_fft=70000 with hop=1"),
        ("ratio_masks", lambda: ratio_masks(e((1, 1, 1, 2)), e((21_845, 1, 1, 1)), 1), "21845 stems"),
        ("harmonic_rows", lambda: harmonic_rows(e((1, 32_769)), e((32_769,)), 32_767, 16000), "32767 harmonics"),
        ("harmonic_bank", lambda: harmonic_bank(e((2, 65_536)), e((2, 4)), 4, 16000), "65535 harmonics"),
        ("spectral_mac", lambda: spectral_mac(e((1, 1, 2)), e((1, 65_535, 2)), e((1, 65_534, 2)), 65_535),
         "65535 partitions"),
        ("crepe_frames", lambda: crepe_frames(e((10,)), frame=1_400_000), "frames of 1400000 samples"),
        ("lstm", lambda: lstm(e((1, 65_534)), {}, 8), "65534 features"),
        ("gru", lambda: gru(e((1, 8)), {}, 33_000, bidirectional=True), "66000 features"),
        ("matmul", lambda: matmul(e((1, 261_000)), e((261_000, 1))), "K=261000"),
        ("linear", lambda: linear(e((1, 261_000)), e((1, 261_000))), "K=261000"),
    ]


def test_refusals_name_the_op_and_come_before_the_gpu(dev):
    for op, call, words in refused_calls(dev):
        dev.flush()
        with pytest.raises(ValueError, match=op) as e:
            call()
        msg = str(e.value)
        assert words in msg and "loop" in msg, (op, msg)
        assert not dev.pending_kernels(), f"{op}: work was recorded before the error ({msg})"


# ---------------------------------------------------------------------------- at the bounds
#
# The largest shapes each bound lets through, computed correctly: the bounds count at
# least the passes the kernels make. (In every case the entries the loop reaches last
# decide the result, so a loop cut short would show.)


def test_softmax_at_the_bound(dev, rng):
    n = 64 * ((LOOP_LIMIT - 10) // 2 - 1)          # 2 (ceil(n / 64) + 1) + 8 = 65,535
    x = rng.standard_normal(n).astype(np.float32)
    x[-1] = 30.0                                    # the last element takes nearly all
    got = softmax(dev.tensor(x)).numpy()
    e = np.exp(x.astype(np.float64) - 30.0)
    want = e / e.sum()
    # f32: exp good to a few ulp, the row sum ~ (n / 64 + 6) roundings of a value ~1
    assert np.allclose(got, want, rtol=(n / 64 + 16) * EPS, atol=1e-30)


def test_layer_norm_at_the_bound(dev, rng):
    n = 64 * ((LOOP_LIMIT - 19) // 3 - 1)          # 3 (ceil(n / 64) + 1) + 16 <= 65,535
    x = rng.standard_normal((1, n)).astype(np.float32)
    x[0, -64:] += 1000.0                            # the mean and variance hinge on the end
    got = layer_norm(dev.tensor(x), n).numpy()
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean()) / np.sqrt(x64.var() + 1e-5)
    # sums of n / 64 terms per invocation then a 64-tree, relative to sum |x| ~ 1000 * 64:
    # mean, std good to ~(n / 64 + 8) eps relative; outputs are at most ~sqrt(n) / 8
    tol = (n / 64 + 8) * EPS * (np.abs(x64).sum() / np.abs(x64 - x64.mean()).sum()) * np.abs(want).max() * 4
    assert np.abs(got - want).max() <= tol


def test_max_pool_at_the_bound(dev, rng):
    kh, kw = 255, 255                               # 255 * 256 + 2 = 65,282 passes (one output each)
    x = rng.standard_normal((1, 2, kh, kw)).astype(np.float32)
    x[:, :, -1, -1] = 10.0                          # the window's last element is its max
    assert np.array_equal(max_pool2d(dev.tensor(x), (kh, kw)).numpy(), x.max(axis=(2, 3), keepdims=True))
    w = LOOP_LIMIT - 3                              # 1 * (w + 1) + 2 = 65,535
    x = rng.standard_normal((1, 1, 1, w)).astype(np.float32)
    x[..., -1] = 10.0
    assert max_pool2d(dev.tensor(x), (1, w)).numpy().item() == 10.0


def test_matmul_with_a_long_k(dev, rng):
    # The longest K the bound lets through, on mm_reg and with a tiled variant forced
    # (which cannot take it in one invocation and hands over to mm_reg).
    K = 4 * (LOOP_LIMIT - 300)
    a = rng.random((4, K), dtype=np.float32)
    b = rng.random((K, 5), dtype=np.float32)
    a[:, -1] = 1000.0                               # the last term dominates
    b[-1, :] = 1000.0
    want = a.astype(np.float64) @ b
    for variant in ("reg4x4w64", "tile64k16"):
        got = matmul(dev.tensor(a), dev.tensor(b), variant=variant).numpy()
        # positive terms: |error| <= K eps sum, the worst-case bound of an f32 sum of K terms
        assert np.all(np.abs(got - want) <= K * EPS * want), variant
