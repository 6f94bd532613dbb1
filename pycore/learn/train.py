"""Training: epochs of truncated backpropagation through time with Adam, on the GPU.

    trainer = Trainer(model, frames_host, lr=1e-3, input_noise=1.0, feedback=FEEDBACK, vary=False)
                                                      frames_host: flat floats [frames * F]
    loss = await trainer.epoch(on_step=None)          mean MSE of the epoch's windows; on_step(n)
                                                      after each step (awaited when it is async)
                                                      (the epoch also sets model.noise_std)
    tensors, metadata = trainer.checkpoint()          save with safetensors; resume with
    trainer.restore(tensors, metadata)                the moments and the epoch count

An epoch splits the clip's frame transitions (z_t -> z_{t+1}) into `batch` contiguous
lanes; with vary=True the lanes start at a random transition each epoch
(the clip's transitions taken as a ring: lane b starts at (r + b * lane) mod n, r drawn
from (LAYOUT_SEED, epoch), so a resumed run lays them out as a straight one would; a lane
that passes the clip's end goes on at its start), so the windows' edges, where the state
is handed on or starts from zero, fall at other frames every epoch (vary=False, the
default: r = 0, the fixed layout; varied lanes with feedback 0.5 were not better on the
model card's clip 1, so neither is a default). Each lane is walked in windows of `seq_len` frames, the LSTM state handed from
window to window (the gradient stops at window edges: truncation at seq_len steps). One
Adam step per window. Browser and native: the host only slices rows of the frame array
into each window's input and target and uploads them, and reads one loss per epoch.

A window's whole GPU work (forward, loss, backpropagation through time, Adam, the state
handed to the next window) is one plan (pycore.gpu.runtime.Plan), recorded at the first
window and replayed for every other: per window the host writes the input, the target
and Adam's bias corrections into tensors made before recording, replays, and adds the
window's loss and its squared errors per bin to the epoch's totals (two dispatches).
At the end of the epoch the per-bin totals give model.noise_std, the RMS prediction
error of each bin over the epoch: the spread of the Gaussian an MSE fit stands for,
which sampling draws from (pycore.learn.generate). plans=False runs the same steps
eagerly (the reference the tests compare with: a plan changes the host's work only).

input_noise > 0 (default 1: the model card's choice) trains on noisy inputs: each
window's input frames get input_noise * noise_std[bin] * N(0, 1) (the previous epoch's
noise_std; none before the first epoch has ended), the targets stay clean. Sampling
feeds the model its own noisy draws; trained only on the clip's exact frames it has
never seen one, and its free-running frames drift from the clip's spectrum (exposure
bias). The noise is drawn on the GPU from (seed, epoch, window): the same natively and
in the browser, and a resumed run draws what a straight one would.

feedback > 0 (scheduled sampling, in its parallel form: Duckworth et al. 2019, "Parallel
Scheduled Sampling") trains the model on its own draws as well as on the clip's frames:
each window runs forward twice. The first pass, on the (input-noised) frames, gives the
predictions; then each input frame after the window's first is replaced, with probability
q, by the sampler's draw for it (its prediction plus noise_std[bin] x N(0, 1),
pycore.ops.spectrogram.feed_back); the second pass, on that mix, gives the loss, its
gradient and the Adam step (the first pass's predictions are constants: no gradient
flows through them). q rises linearly from 0 to `feedback` over the first FEEDBACK_RAMP
epochs (q = feedback * min(1, epoch / FEEDBACK_RAMP)) and lives in a tensor the plan
reads, as the noise counter does. noise_std stays the first pass's RMS error: the
spread of the one-step prediction the sampler draws from. Cost: one more forward pass
and loss per window.
"""

from __future__ import annotations

import array
import math
import random

from ..models.magnet import NOISE_STD
from ..ops.adam import Adam
from ..ops.elementwise import add, copy, mul
from ..ops.loss import mse_loss
from ..ops.reduce import sum as reduce_sum
from ..ops.spectrogram import add_noise, feed_back

NOISE_SEED = 0x51ED     # input noise: the counter (epoch * windows + window) picks the draws
LAYOUT_SEED = 0x1A7E    # vary: the epoch's lane offset r
FEEDBACK_SEED = 0xFEED  # feedback: which frames are replaced, and their noise
FEEDBACK = 0.0          # feedback's default: off (0.5 tried on clip 1, not better: model card)
FEEDBACK_RAMP = 100     # epochs over which the mixing probability rises to it


class Trainer:
    def __init__(self, model, frames_host, lr=1e-3, clip=1.0, plans=True, input_noise=1.0, feedback=FEEDBACK,
                 vary=False):
        self.model, self.dev = model, model.dev
        F, cfg = model.bins, model.config
        self.F = F
        self.frames = array.array("f", frames_host)
        n = len(self.frames) // F - 1  # transitions
        self.S, self.B = cfg["seq_len"], cfg["batch"]
        self.windows = n // (self.B * self.S)
        if self.windows < 1:
            raise ValueError(f"the clip gives {n} frame transitions, fewer than one batch "
                             f"({self.B} lanes x {self.S} frames); give a longer clip")
        self.lane = self.windows * self.S
        self.n, self.vary = n, bool(vary)
        self.tapes = model.tapes(self.S, self.B)
        self.opt = Adam(model.params, lr=lr, clip=clip)
        self.epochs_done = 0
        self.x, self.y = (self.dev.empty((self.S, self.B, F)) for _ in range(2))  # the window's input, target
        self.use_plans = bool(plans)
        self.plan = None    # (plan, loss tensor), recorded at the first window
        if not input_noise >= 0:
            raise ValueError(f"input_noise must be >= 0, got {input_noise}")
        self.input_noise = float(input_noise)
        # the per-bin noise_std lives in one tensor the plan binds; each epoch rewrites it
        self.noise_std = self.dev.tensor(bytes(4 * F), (F,))
        if model.noise_std is not None:     # a resumed model's
            copy(model.noise_std, out=self.noise_std)
            model.noise_std = self.noise_std
        self.counter = self.dev.tensor([0], (1,), dtype="u32")    # the input noise's window counter
        if not 0 <= feedback <= 1:
            raise ValueError(f"feedback must be a probability in [0, 1], got {feedback}")
        self.feedback = float(feedback)
        self.mix = self.dev.tensor([0, 0], (2,), dtype="u32")      # feed_back's (counter, threshold)

    def lane_starts(self, epoch):
        """The transitions lanes 0 .. batch - 1 start at in epoch `epoch` (0-based)."""
        r = random.Random(LAYOUT_SEED * 1_000_003 + epoch).randrange(self.n) if self.vary else 0
        return [(r + b * self.lane) % self.n for b in range(self.B)]

    def mixing(self, epoch):
        """feedback's mixing probability in epoch `epoch` (0-based)."""
        return self.feedback * min(1.0, epoch / FEEDBACK_RAMP)

    def _window(self, starts, w, shift):
        """[S, B, F] rows as bytes: lane b's frames (starts[b] + w * S + s) mod n + shift,
        time-major."""
        F, out = self.F, array.array("f")
        for s in range(self.S):
            for b in range(self.B):
                t = (starts[b] + w * self.S + s) % self.n + shift
                out.extend(self.frames[t * F:(t + 1) * F])
        return out.tobytes()

    def _step(self):
        """One window's GPU work on self.x, self.y: returns its loss (a 1-element tensor)
        and the sum of its squared errors per bin scaled by (2 / n)^2 ([F]: the squares
        of the loss's gradient, n = S * B * F, summed over the window's frames)."""
        if self.input_noise:
            add_noise(self.x, self.input_noise, NOISE_SEED, count=self.counter, count_step=self.x.size,
                      bin_std=self.noise_std)
        err = None
        if self.feedback:   # first pass: its errors give noise_std, its predictions the mix
            first = self.model.forward(self.x, self.tapes)
            _, err = mse_loss(first, self.y)
            feed_back(self.x, first, self.noise_std, self.mix, 1.0, FEEDBACK_SEED)
        pred = self.model.forward(self.x, self.tapes)
        loss, grad = mse_loss(pred, self.y)
        err = grad if err is None else err
        sq = reduce_sum(mul(err, err).reshape(self.S * self.B, self.F), dim=0)
        self.opt.record(self.model.backward(grad, self.tapes))
        for tape in self.tapes:     # the next window starts where this one ended
            tape.carry()
        return loss, sq

    def _replay(self):
        if self.plan is None:
            plan = self.dev.plan()
            with plan:
                out = self._step()
            self.plan = (plan, out)
        plan, out = self.plan
        plan.replay()
        return out

    def steps(self):
        """Adam steps per epoch."""
        return self.windows

    async def epoch(self, on_step=None):
        total = sq_total = None
        for tape in self.tapes:
            tape.reset()
        starts = self.lane_starts(self.epochs_done)
        threshold = min(round(self.mixing(self.epochs_done) * 2.0 ** 32), 0xFFFFFFFF)
        for w in range(self.windows):
            self.dev.write(self.x, self._window(starts, w, 0))
            self.dev.write(self.y, self._window(starts, w, 1))
            count = (self.epochs_done * self.windows + w) & 0xFFFFFFFF
            if self.input_noise:
                self.dev.write(self.counter, array.array("I", [count]).tobytes())
            if self.feedback:
                self.dev.write(self.mix, array.array("I", [count, threshold]).tobytes())
            self.opt.advance()
            loss, sq = self._replay() if self.use_plans else self._step()
            if total is None:   # copies: the plan's outputs are rewritten by the next replay
                total, sq_total = add(loss, 0.0), add(sq, 0.0)
            else:
                total, sq_total = add(total, loss), add(sq_total, sq)
            if on_step and (pending := on_step(w + 1)) is not None:
                await pending  # an async on_step: the browser worker reads its messages there
        self.epochs_done += 1
        n = self.S * self.B * self.F    # sq holds (2 d / n)^2 per error d
        per_frame = (n / 2.0) ** 2 / (self.windows * self.S * self.B)
        sq_host = await sq_total.read()
        self.dev.write(self.noise_std, array.array("f", [math.sqrt(float(v) * per_frame) for v in sq_host]).tobytes())
        self.model.noise_std = self.noise_std
        return float((await total.read())[0]) / self.windows

    def checkpoint(self):
        tensors = {**self.model.params, **self.opt.state()}
        if self.model.noise_std is not None:
            tensors[NOISE_STD] = self.model.noise_std
        meta = {**self.model.metadata(), "epochs": str(self.epochs_done), "adam_t": str(self.opt.t)}
        return tensors, meta

    def restore(self, tensors, metadata):
        self.opt.load_state(tensors, int(metadata.get("adam_t", 0)))
        self.epochs_done = int(metadata.get("epochs", 0))
        self.release()      # the plan binds the moments load_state replaced: record again

    def release(self):
        """Give the recorded plan's GPU memory back (a plan keeps it until released; the
        next epoch records the plan again)."""
        if self.plan is not None:
            self.plan[0].release()
            self.plan = None

