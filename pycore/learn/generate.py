"""Generation: autoregressive sampling of log-magnitude frames, then fast Griffin-Lim,
block by block so that GPU memory stays flat for any length.

    gen = Generator(model, seed=0, temperature=0.0, prime=None, gl_iters=32)
    async for block in gen.blocks(seconds):    mono float blocks (array('f')) at the model rate

Each frame: the model (one step of each LSTM, state kept in its tapes) predicts the next
frame from the last one, `temperature` * N(0, 1) is added (in units of the clip's
log-magnitude std), and the result is the next input. `prime` (flat frames from the
clip, a multiple of F) runs through the model first and its last frame starts the
sequence; without it the first frame is noise. Blocks of BLOCK frames are inverted with
fast Griffin-Lim together with the previous block's last OVERLAP frames, and the
overlapping audio is cross-faded (raised cosine), so the seams carry no clicks.
"""

from __future__ import annotations

import array
import math

from ..ops.elementwise import concat
from ..ops.spectrogram import add_noise, griffin_lim

BLOCK = 128     # frames per Griffin-Lim block
OVERLAP = 16    # frames shared with the previous block (cross-faded)


class Generator:
    def __init__(self, model, seed=0, temperature=0.0, prime=None, gl_iters=32):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.model, self.dev, F = model, model.dev, model.bins
        self.seed, self.temperature, self.gl_iters = int(seed), float(temperature), int(gl_iters)
        self.tapes = model.tapes(1, 1)
        self.count = 0      # frames sampled so far (the noise counter)
        self.started = False
        if prime:
            for t in range(len(prime) // F):  # run the clip's frames through, one step each
                self.next = self._step(self.dev.tensor(prime[t * F:(t + 1) * F], (1, 1, F)))
        else:
            self.next = self.dev.tensor(bytes(4 * F), (1, 1, F))
            add_noise(self.next, 1.0, self.seed, 0x7FFFFFFF)

    def _step(self, x):
        if self.started:
            for tape in self.tapes:
                tape.carry()
        self.started = True
        return self.model.forward(x, self.tapes)

    def frames(self, n):
        """The next n sampled frames: a list of [1, F] tensors on the GPU."""
        rows = []
        for _ in range(n):
            frame = self.next
            if self.temperature:
                add_noise(frame, self.temperature, self.seed, self.count * self.model.bins)
            self.count += 1
            rows.append(frame.reshape(1, self.model.bins))
            self.next = self._step(frame)
        return rows

    async def blocks(self, seconds):
        """Mono audio blocks (array('f')) adding up to round(seconds * rate) samples."""
        cfg, m = self.model.config, self.model
        hop, total = cfg["hop"], round(seconds * cfg["sample_rate"])
        fade_n = (OVERLAP - 1) * hop  # samples the two blocks share
        fade = [0.5 - 0.5 * math.cos(math.pi * (i + 0.5) / fade_n) for i in range(fade_n)]
        tail, done, prev_rows = None, 0, []
        while done < total:
            new = self.frames(BLOCK if tail is None else BLOCK - OVERLAP)
            z = concat(prev_rows + new, dim=0)
            prev_rows = new[-OVERLAP:]
            y = griffin_lim(z, cfg["n_fft"], hop, m.mean, m.std, self.gl_iters, seed=self.seed + self.count)
            audio = array.array("f", await y.read())
            if tail is not None:  # cross-fade the previous block's last OVERLAP frames
                for i in range(fade_n):
                    audio[i] = tail[i] * (1.0 - fade[i]) + audio[i] * fade[i]
            body = audio[:len(audio) - fade_n]
            tail = audio[len(audio) - fade_n:]
            body = body[:total - done]
            done += len(body)
            yield body

