"""pycore.learn.generate: the recorded block plans sample exactly what the model's own
forward pass (the training path, frame by frame, unpadded) predicts, the audio equals
the same steps run eagerly, and each block after the first few costs one readback, no
fresh dispatch and no GPU memory."""

import asyncio

import numpy as np

from pycore.learn.generate import BLOCK, OVERLAP, Generator
from pycore.models.magnet import MagNet
from pycore.ops.spectrogram import add_noise

# F = 33 bins: not a multiple of 4, so the padded sampling weights are exercised
CFG = {"sample_rate": 8000, "n_fft": 64, "hop": 16, "hidden": 16, "layers": 2, "seq_len": 8, "batch": 4}
SEED, TEMP = 7, 0.3
N = BLOCK + 2 * (BLOCK - OVERLAP) + 5      # into the fourth block: both sides of the plans


def reference_frames(model, n, prime):
    """The frames sampled with MagNet.forward on [1, 1, F] frames, one step at a time."""
    dev, F = model.dev, model.bins
    tapes = model.tapes(1, 1)
    for t in range(len(prime) // F):
        nxt = model.forward(dev.tensor(prime[t * F:(t + 1) * F], (1, 1, F)), tapes)
        for tape in tapes:
            tape.carry()
    out = []
    for c in range(n):
        add_noise(nxt, TEMP, SEED, c * F)
        out.append(nxt.numpy().ravel())
        nxt = model.forward(nxt, tapes)
        for tape in tapes:
            tape.carry()
    return np.stack(out)


def test_sampled_frames_are_the_models_predictions(dev):
    model = MagNet.create(dev, CFG, seed=1)
    prime = list(np.random.default_rng(0).standard_normal(3 * model.bins).astype(np.float32))
    gen = Generator(model, seed=SEED, temperature=TEMP, prime=prime)
    got = np.asarray(asyncio.run(gen.frames(N)), np.float32).reshape(N, model.bins)
    np.testing.assert_array_equal(got, reference_frames(model, N, prime))
    gen.release()


def audio(gen, seconds):
    async def run():
        return [np.asarray(b) async for b in gen.blocks(seconds)]
    return asyncio.run(run())


def test_planned_blocks_equal_eager_ones(dev):
    model = MagNet.create(dev, CFG, seed=2)
    seconds = N * CFG["hop"] / CFG["sample_rate"]
    planned = audio(Generator(model, seed=SEED, temperature=TEMP), seconds)
    eager = audio(Generator(model, seed=SEED, temperature=TEMP, plans=False), seconds)
    assert len(planned) == len(eager) == 4
    for a, b in zip(planned, eager):
        np.testing.assert_array_equal(a, b)
    assert sum(map(len, planned)) == round(seconds * CFG["sample_rate"])


def test_blocks_cost_one_readback_and_no_memory(dev):
    model = MagNet.create(dev, CFG, seed=3)
    gen = Generator(model, seed=SEED, temperature=TEMP)

    async def run():
        blocks = gen.blocks(1e6)
        for _ in range(3):              # the plans are recorded by the second block (both sides)
            await blocks.__anext__()
        counts, reserved = dict(dev.counts), dev.mem_reserved
        for _ in range(4):
            await blocks.__anext__()
        await blocks.aclose()
        return {k: dev.counts[k] - counts[k] for k in counts}, reserved
    done, reserved = asyncio.run(run())
    assert done["readbacks"] == 4 and done["dispatches"] == 0
    assert done["replayed"] > 4 * (BLOCK - OVERLAP) * 7     # >= 7 dispatches a frame ran, replayed
    assert dev.mem_reserved == reserved
    gen.release()
