"""The runtime's host-cost machinery, on the native (lavapipe) backend: the buffer pool,
the uniform arena and bind group cache (no GPU object per dispatch once warm), and
recorded plans (record once, replay with new inputs; same results as eager runs).
Counts are asserted, never times (those are `stemtone bench runtime`)."""

import asyncio
import gc

import numpy as np
import pytest

from pycore.gpu.runtime import GPUOutOfMemoryError, size_class
from pycore.ops import elementwise as E
from pycore.ops.activations import relu
from pycore.ops.matmul import matmul


def chain(x, w):
    """A small fixed-shape computation: matmul, bias-free relu, scale, add."""
    h = matmul(x, w)
    r = relu(h)
    h.release()
    y = E.add(E.mul(r, r), r)
    r.release()
    return y


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    return rng.standard_normal((3, 33, 20)).astype(np.float32), rng.standard_normal((20, 17)).astype(np.float32)


def reference(x, w):
    r = np.maximum(x @ w, 0)
    return r * r + r


# ------------------------------------------------------------------ pool


def test_size_classes_are_within_an_eighth_of_an_octave():
    for n in [1, 4, 255, 256, 257, 1000, 4096, 4097, 10**6, 123_456_789]:
        c = size_class(n)
        assert c >= max(n, 256) and (c <= 256 or c <= n * 1.125 + 1), n
    assert size_class(1000) == size_class(1010)  # nearby sizes share a class


def test_released_buffers_are_reused(dev):
    dev.flush()
    t = dev.empty((1000,))
    buf = t.buffer
    t.release()
    u = dev.empty((1010,))  # the same size class: the same buffer
    assert u.buffer is buf
    u.release()
    created = dev.counts["buffers_created"]
    for _ in range(50):
        v = dev.empty((1000,))
        v.release()
    assert dev.counts["buffers_created"] == created


def test_memory_accounting_stays_exact_with_the_pool(dev):
    import gc

    gc.collect()
    dev.flush()
    before, reserved = dev.mem_in_use, dev.mem_reserved
    t = dev.empty((1001,))
    assert dev.mem_in_use == before + 4004
    t.release()
    assert dev.mem_in_use == before and dev.mem_reserved >= reserved
    dev.trim()
    assert dev.mem_reserved == dev.mem_reserved - dev._pool.bytes and dev._pool.bytes == 0


def test_out_of_memory_empties_the_pool_and_retries_once(dev, monkeypatch):
    dev.flush()
    for t in [dev.empty((5000,)) for _ in range(3)]:
        t.release()  # three buffers in the pool
    assert dev._pool.bytes > 0
    calls = []
    real = type(dev)._create_buffer

    def failing_once(self, size):
        calls.append(size)
        if len(calls) == 1:
            raise GPUOutOfMemoryError("simulated")
        return real(self, size)

    monkeypatch.setattr(type(dev), "_create_buffer", failing_once)
    t = dev.empty((77_777,))  # no pooled buffer of this class: a new one, which fails once
    assert len(calls) == 2 and dev._pool.bytes == 0 and t.buffer is not None
    t.release()

    def failing(self, size):
        raise GPUOutOfMemoryError("simulated")

    monkeypatch.setattr(type(dev), "_create_buffer", failing)
    with pytest.raises(GPUOutOfMemoryError):
        dev.empty((88_888,))


# ------------------------------------------------------------------ arena and bind groups


def test_warm_dispatches_create_no_gpu_objects(dev, data):
    x, w = dev.tensor(data[0]), dev.tensor(data[1])
    for _ in range(3):  # warm: pipelines, pool, and the bind groups of the pool's steady order
        chain(x, w).release()
    dev.flush()
    before = dict(dev.counts)
    for _ in range(20):
        chain(x, w).release()
    dev.flush()
    assert dev.counts["buffers_created"] == before["buffers_created"]
    assert dev.counts["bind_groups_created"] == before["bind_groups_created"]
    assert dev.counts["dispatches"] > before["dispatches"]
    np.testing.assert_allclose(chain(x, w).numpy(), reference(*data), rtol=1e-5, atol=1e-5)


def test_params_of_many_dispatches_in_one_submit(dev):
    """More dispatches than the arena holds: each keeps its own parameters."""
    x = dev.tensor(np.arange(8, dtype=np.float32))
    acc = dev.tensor(np.zeros(8, np.float32))
    n = dev.MAX_PENDING + 37
    for i in range(n):
        nxt = E.add(acc, E.scale(x, float(i)))  # scale's factor is a parameter
        acc.release()
        acc = nxt
    np.testing.assert_allclose(acc.numpy(), np.arange(8) * n * (n - 1) / 2, rtol=1e-6)


# ------------------------------------------------------------------ plans


def test_plan_replays_match_eager_runs(dev, data):
    x = dev.empty(data[0].shape)
    w = dev.tensor(data[1])
    plan = dev.plan()
    with plan:
        y = chain(x, w)
    assert plan.dispatches >= 3 and dev.pending_kernels() == []  # recorded, nothing ran
    rng = np.random.default_rng(3)
    for _ in range(3):
        xs = rng.standard_normal(data[0].shape).astype(np.float32)
        dev.write(x, xs.tobytes())
        plan.replay()
        np.testing.assert_allclose(y.numpy(), reference(xs, data[1]), rtol=1e-5, atol=1e-5)
    plan.release()
    with pytest.raises(ValueError, match="released"):
        E.add(y, y)


def test_replays_create_no_gpu_objects(dev, data):
    x = dev.tensor(data[0])
    w = dev.tensor(data[1])
    plan = dev.plan()
    with plan:
        y = chain(x, w)
    plan.replay()
    y.numpy()
    before = dict(dev.counts)
    for _ in range(100):
        plan.replay()
    out = y.numpy()
    assert dev.counts["buffers_created"] == before["buffers_created"]
    assert dev.counts["bind_groups_created"] == before["bind_groups_created"]
    assert dev.counts["uploads"] == before["uploads"]
    assert dev.counts["replayed"] == before["replayed"] + 100 * plan.dispatches
    np.testing.assert_allclose(out, reference(*data), rtol=1e-5, atol=1e-5)
    plan.release()


def test_a_plan_reuses_what_it_released_while_recording(dev):
    x = dev.tensor(np.ones(4096, np.float32))
    plan = dev.plan()
    with plan:
        y = x
        for _ in range(10):
            z = E.add(y, x)
            if y is not x:
                y.release()
            y = z
    assert len(plan.buffers) <= 2  # ten intermediates, two buffers
    plan.replay()
    np.testing.assert_array_equal(y.numpy(), np.full(4096, 11, np.float32))
    plan.release()


def test_plan_rules_are_enforced(dev, data):
    x = dev.tensor(data[0])
    w = dev.tensor(data[1])
    plan = dev.plan()
    with plan:
        y = chain(x, w)
        with pytest.raises(RuntimeError, match="recording"):
            asyncio.run(y.read())
        with pytest.raises(RuntimeError, match="already recording"):
            with dev.plan():
                pass
    with pytest.raises(RuntimeError, match="recorded once"):
        with plan:
            pass
    w.release()
    with pytest.raises(ValueError, match="released after recording"):
        plan.replay()
    plan.release()
    with pytest.raises(RuntimeError, match="before replay"):
        plan.replay()


def test_a_failed_recording_gives_its_memory_back(dev, data):
    gc.collect()     # tensors of earlier tests still waiting for the collector would be freed below
    dev.flush()
    before = dev.mem_in_use
    x = dev.tensor(data[0])
    with pytest.raises(ValueError):
        with dev.plan():
            E.add(x, dev.empty((5,)))  # shapes do not match
    x.release()
    dev.flush()
    assert dev.mem_in_use == before


def test_eager_work_inside_a_recording_runs_now(dev):
    x = dev.tensor(np.arange(4, dtype=np.float32))
    with dev.plan() as plan:
        with dev.eager():
            cached = E.add(x, x)  # built once, outside the plan
        y = E.add(cached, x)
    assert cached._plan is None and y._plan is plan
    plan.replay()
    np.testing.assert_array_equal(y.numpy(), 3 * np.arange(4, dtype=np.float32))
    plan.release()
    np.testing.assert_array_equal(cached.numpy(), 2 * np.arange(4, dtype=np.float32))


def test_ping_pong_plans_store_their_state_without_copies(dev):
    """Two plans carry a running state between them with Plan.store: plan p reads side
    p and writes side 1 - p; the stored result lands in the other side's tensor, with
    no copy dispatch. An intermediate released before the stored tensor is made reuses
    its buffer (the plan's free list): it must keep its own buffer, not the target's."""
    n = 4096
    sides = [dev.tensor(np.zeros(n, np.float32)), dev.tensor(np.zeros(n, np.float32))]
    x = dev.empty((n,))
    plans = []
    for p in (0, 1):
        plan = dev.plan()
        with plan:
            t = E.concat([sides[p], x])         # an intermediate twice the state's size ...
            lo, hi = E.pad(t, (0, -n)), E.pad(t, (-n, 0))
            t_buffer = t.buffer
            t.release()
            new = E.add(lo, hi)                 # ... whose buffer this reuses: state' = state + x
            assert new.buffer is t_buffer
            plan.store(new, sides[1 - p])
        assert plan.dispatches == 5             # concat 2, crops 2, add; no copy
        plans.append(plan)
    rng = np.random.default_rng(5)
    want = np.zeros(n, np.float64)
    for step in range(6):
        xs = rng.standard_normal(n).astype(np.float32)
        dev.write(x, xs.tobytes())
        plans[step % 2].replay()
        want = want + xs
        got = sides[1 - step % 2].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for plan in plans:
        plan.release()


def test_plan_store_rules(dev):
    a = dev.tensor(np.ones(8, np.float32))
    b = dev.tensor(np.ones(8, np.float32))
    with pytest.raises(RuntimeError, match="only while the plan records"):
        dev.plan().store(a, b)
    plan = dev.plan()
    with pytest.raises(ValueError, match="binds .* itself"):
        with plan:
            plan.store(E.add(a, b), b)          # b is read by the plan
    plan = dev.plan()
    with pytest.raises(ValueError, match="made by this plan"):
        with plan:
            plan.store(a, b)
    plan = dev.plan()
    with pytest.raises(ValueError, match="one dtype and size"):
        with plan:
            plan.store(E.add(a, a), dev.tensor(np.ones(9, np.float32)))
