"""Generation: autoregressive sampling of log-magnitude frames, then fast Griffin-Lim,
block by block so that GPU memory stays flat for any length.

    gen = Generator(model, seed=0, temperature=1.0, prime=None, gl_iters=32)
    async for block in gen.blocks(seconds):    mono float blocks (array('f')) at the model rate
    z = await gen.frames(n)                    or just the next n sampled frames (array('f'), n * F)

Each frame: the model (one step of each LSTM, state kept in its tapes) predicts the next
frame from the last one, `temperature` * noise_std[bin] * N(0, 1) is added, and the
result is the next input. noise_std (MagNet.noise_std) is the RMS prediction error of
each bin in training: a model fitted by MSE is a Gaussian of that spread around its
prediction, and temperature 1 draws from it. The prediction alone (temperature 0) is
the conditional mean of the log-magnitude: its power falls short of the clip's (on the
card's clip 2.4 dB teacher-forced), and fed back it settles on a nearly static frame.
Models saved without noise_std (before it was kept) add temperature * N(0, 1) in units
of the clip's log-magnitude std. `prime` (flat frames from the
clip, a multiple of F) runs through the model first and its last frame starts the
sequence; without it the first frame is noise. Blocks of BLOCK frames are inverted with
fast Griffin-Lim together with the previous block's last OVERLAP frames, and the
overlapping audio is cross-faded (raised cosine), so the seams carry no clicks.

The GPU work of a block is two recorded plans (pycore.gpu.runtime.Plan), replayed block
after block: sampling its new frames (a frame: 3 dispatches per LSTM layer, the output
layer, its row of the block and the noise) and Griffin-Lim (32 iterations of an STFT
and an iSTFT), with one readback of the block's audio and no host work per frame.
What changes between replays lives in tensors made before recording: the frame that
starts the block and the last OVERLAP frames of the previous one (two of each: a block
reads one side and stores its successors into the other, Plan.store, so that no
dispatch copies them), the LSTM state (updated in place by the plan), and the
frame counter (a u32 the noise and Griffin-Lim's phase seed read; the host writes it
before each replay). The first block's first OVERLAP frames are sampled eagerly and
stand for a previous block's tail, so that every block replays the same plans (one per
side, and Griffin-Lim's). Results equal those of running the same steps eagerly: a plan
changes what the host does, not what the GPU computes (tests/test_learn_generate.py).
"""

from __future__ import annotations

import array
import math

from ..ops import elementwise as E
from ..ops.spectrogram import add_noise, griffin_lim

BLOCK = 128     # frames per Griffin-Lim block
OVERLAP = 16    # frames shared with the previous block (cross-faded)


class Generator:
    def __init__(self, model, seed=0, temperature=1.0, prime=None, gl_iters=32, plans=True):
        """plans=False runs every block's steps eagerly (the reference the tests compare
        the recorded plans with)."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.model, self.dev, F = model, model.dev, model.bins
        self.seed, self.temperature, self.gl_iters = int(seed), float(temperature), int(gl_iters)
        self.use_plans = bool(plans)
        dev, Fp = self.dev, model.padded_bins
        self.weights = model.sampling_weights()
        self.noise_std = None if model.noise_std is None else E.pad(model.noise_std, (0, Fp - F))
        self.tapes = model.tapes(1, 1)
        self.count = 0      # frames sampled so far (the noise counter)
        self.counter = dev.tensor([0], (1,), dtype="u32")   # self.count where a replay reads it
        pad = [0.0] * (Fp - F)
        if prime:
            if len(prime) < F:
                raise ValueError(f"prime holds {len(prime)} values, less than one frame of {F}")
            for t in range(len(prime) // F):  # run the clip's frames through, one step each
                start = model.step(dev.tensor(list(prime[t * F:(t + 1) * F]) + pad, (1, 1, Fp)), self.tapes,
                                   self.weights)
        else:
            start = dev.tensor(bytes(4 * Fp), (1, 1, Fp))
            add_noise(start, 1.0, self.seed, 0x7FFFFFFF)
        # the block plan's carried tensors, two sides: a block reads self.side's, stores the other's
        self.start = [start, dev.empty((1, 1, Fp))]         # the frame that starts the next block
        self.tail = [None, dev.empty((OVERLAP, F))]         # the last block's last OVERLAP frames
        self.z = dev.empty((BLOCK, F))                       # the block Griffin-Lim inverts
        self.side = 0
        self.plans = {}     # side -> sampling plan; "gl" -> (Griffin-Lim plan, its audio)
        self.blocks_done = 0

    # ---- the GPU work of one block
    def _steps(self, frame, n):
        """n sampling steps from `frame` (noise added in place): (the next frame, the n
        frames as [n, F])."""
        m, F, Fp = self.model, self.model.bins, self.model.padded_bins
        rows = []
        for i in range(n):
            add_noise(frame, self.temperature, self.seed, i * F, count=self.counter, count_step=F,
                      bin_std=self.noise_std)
            rows.append(frame.reshape(1, Fp))
            frame = m.step(frame, self.tapes, self.weights)
        return frame, E.pad(E.concat(rows, dim=0), (0, F - Fp))

    def _sample(self, side):
        """A block's new frames from self.start[side]: z = the previous block's tail and
        BLOCK - OVERLAP new frames. Returns the next block's start and tail and z."""
        frame, new = self._steps(self.start[side], BLOCK - OVERLAP)
        z = E.concat([self.tail[side], new], dim=0)
        return {"start": frame, "tail": E.pad(z, (0, 0, OVERLAP - BLOCK, 0)), "z": z}

    def _griffin_lim(self):
        cfg, m = self.model.config, self.model
        return griffin_lim(self.z, cfg["n_fft"], cfg["hop"], m.mean, m.std, self.gl_iters, seed=self.seed,
                           count=self.counter)

    def _sample_plan(self, side):
        if side not in self.plans:
            plan = self.dev.plan()
            with plan:
                out = self._sample(side)
                plan.store(out["start"], self.start[1 - side])
                plan.store(out["tail"], self.tail[1 - side])
                plan.store(out["z"], self.z)
            self.plans[side] = plan
        return self.plans[side]

    def _next_block(self):
        """Sample the next block's new frames into self.z (the count moves on); returns
        how many of z's rows are new: BLOCK for the first block, else BLOCK - OVERLAP."""
        if self.blocks_done == 0:
            # the first block's first OVERLAP frames, eagerly, stand for a previous block's
            # tail: then every block is the same plan (before any recording, these tensors
            # may simply be replaced)
            self._set_counter(0)
            self.start[0], self.tail[0] = self._steps(self.start[0], OVERLAP)
            self.count = OVERLAP
        n = BLOCK - OVERLAP
        self._set_counter(self.count)
        if self.use_plans:
            self._sample_plan(self.side).replay()
        else:
            out = self._sample(self.side)
            targets = {"start": self.start[1 - self.side], "tail": self.tail[1 - self.side], "z": self.z}
            for name, t in out.items():
                E.pad(t, [0] * (2 * t.ndim), out=targets[name])
        self.side = 1 - self.side
        self.count += n
        self.blocks_done += 1
        return BLOCK if self.blocks_done == 1 else n

    def _block_audio(self):
        """Griffin-Lim of self.z: a tensor of (BLOCK - 1) * hop samples."""
        self._set_counter(self.count)   # the phase seed: seed + frames sampled so far
        if not self.use_plans:
            return self._griffin_lim()
        if "gl" not in self.plans:
            plan = self.dev.plan()
            with plan:
                y = self._griffin_lim()
            self.plans["gl"] = (plan, y)
        plan, y = self.plans["gl"]
        plan.replay()
        return y

    def _set_counter(self, value):
        self.dev.write(self.counter, array.array("I", [value & 0xFFFFFFFF]).tobytes())

    def release(self):
        """Give the recorded plans' GPU memory back (a plan keeps it until released;
        blocks() does this when it ends; a later block records them again)."""
        for plan in self.plans.values():
            (plan[0] if isinstance(plan, tuple) else plan).release()
        self.plans.clear()

    # ---- what callers get
    async def frames(self, n):
        """The next n sampled frames, read back: array('f') of n * F values, frame-major."""
        F, out = self.model.bins, array.array("f")
        while len(out) < n * F:
            new = self._next_block()
            z = await self.z.read()    # numpy natively, array('f') in the browser: both have tobytes()
            out.extend(array.array("f", z.tobytes())[(BLOCK - new) * F:])
        return out[:n * F]

    async def blocks(self, seconds):
        """Mono audio blocks (array('f')) adding up to round(seconds * rate) samples."""
        cfg = self.model.config
        hop, total = cfg["hop"], round(seconds * cfg["sample_rate"])
        fade_n = (OVERLAP - 1) * hop  # samples the two blocks share
        fade = [0.5 - 0.5 * math.cos(math.pi * (i + 0.5) / fade_n) for i in range(fade_n)]
        tail, done = None, 0
        try:
            while done < total:
                self._next_block()
                y = await self._block_audio().read()
                audio = array.array("f", y.tobytes())
                if tail is not None:  # cross-fade the previous block's last OVERLAP frames
                    for i in range(fade_n):
                        audio[i] = tail[i] * (1.0 - fade[i]) + audio[i] * fade[i]
                body = audio[:len(audio) - fade_n]
                tail = audio[len(audio) - fade_n:]
                body = body[:total - done]
                done += len(body)
                yield body
        finally:
            self.release()
