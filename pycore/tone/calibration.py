"""The input calibration of a tone model: what a singer's loudness is mapped onto.

An instrument model learned its loudness from its training renders: a few minutes of
one soundfont's notes, whose voiced frames spread over their own range (the violin's
from about -40 to +10 dB, most of it between -26 and +5). A singer's voiced loudness
spreads over another range, narrower or wider, and lies elsewhere (a microphone's gain
alone moves it by tens of dB). Shifting the singer's mean onto the instrument's (the
engine's rule before this calibration) lines up the centres only: a singer with a
narrow dynamic range then drives a narrow slice of what the model knows, and a wide
one drives it outside. Tone Transfer (Magenta's DDSP demo) instead fits a quantile
transform of loudness on each instrument's training set and maps the user's loudness
quantiles onto it; Stemtone does the same, causally:

  instrument side   the quantiles of the A-weighted loudness over the training melodies'
                    voiced frames (the score holds a note, louder than -50 dB), at
                    probabilities 0, 1/32, ..., 1: computed by pycore.train.data
                    (`calibration`) from the very renders the model was trained on, and
                    stored in the model's safetensors as the float32 tensor
                    "calibration.loudness_db" [33] (with "calibration.midi" [33], the
                    same quantiles of the score's pitch in MIDI notes: the register the
                    model was trained on; its median drives the register shift below).
  singer side       live, there is no whole take to fit: the singer's distribution is a
                    running histogram of the voiced input's loudness (1 dB bins, a plain
                    count over the first CAL_FRAMES voiced frames, then forgetting over
                    that many), mixed with a prior of CAL_PRIOR_FRAMES frames' weight (8 s):
                    the instrument's own distribution moved so that its median sits at
                    the singer's running mean loudness. At the first voiced frame the map
                    is therefore the old mean shift (the singer's mean onto the model's
                    voiced median), and it becomes the quantile map as the singer's
                    frames outweigh the prior.
  map               the decoder's loudness = Q_inst(F_singer(loudness)), through a table
                    at 1 dB steps rebuilt every 8 frames (kernels/tone_controls.wgsl has
                    the exact rule; pycore.ops.tone_controls the float64 reference).

The register: the singer's pitch is moved by whole octaves before the engine's octave
fold, into the model's central training register: the band between the quantiles of
"calibration.midi" at 1/8 and 7/8 (REGISTER_BAND: the central three quarters of the
pitches the model was trained on; `pitch_band`). R is the smallest shift (in size) that
puts the running mean of the singer's voiced pitch (MIDI) inside the band, chosen only
at a note start (the first voiced frame after the harmonic gate's hold ran out), so a
phrase is moved as a whole, and kept at later note starts while the shifted mean stays
within REGISTER_MARGIN of the band; the fold into the model's MIDI range remains as the
guard (pycore.tone.stream's docstring has the rule, kernels/tone_controls.wgsl the exact
one). A singer already inside the band is not moved: the shift is the least that brings
the melody where the model has most of its training, not a move of the singer's centre
onto the model's (the rule before, R = round((median - mean) / 12), moved a singer who
sat 1.5 octaves below a median by one octave or by two on a few semitones' difference,
and moved singers who were already inside the band).

All of it runs on the GPU inside the controls kernel, with its state in the engine's
state buffer, so the live page and `stemtone tone` (the same ToneStream over blocks of a
few seconds) compute the same map at every frame, whatever the block size.

`read` takes the tensors from a loaded safetensors dict and checks them (a weights file
is untrusted input): None when the model carries no calibration (older files: the
engine keeps its mean shift), ValueError naming the fault otherwise.
"""

from __future__ import annotations

import array
import math

from ..ops.tone_controls import CAL_POINTS

LOUDNESS = "calibration.loudness_db"
MIDI = "calibration.midi"
LOUDNESS_RANGE = (-80.0, 40.0)     # loudness_db's range (pycore.ops.loudness) with room above
MIDI_RANGE = (0.0, 127.0)
REGISTER_BAND = (1 / 8, 7 / 8)     # the central training register: these quantiles of "calibration.midi"


def _quantiles(params: dict, key: str, lo: float, hi: float, where: str) -> tuple:
    e = params[key]
    if e.dtype != "f32" or tuple(e.shape) != (CAL_POINTS,):
        raise ValueError(f"{where}: {key} must be float32 [{CAL_POINTS}], got {e.dtype} {list(e.shape)}")
    q = tuple(array.array("f", bytes(e.data)))
    if not all(math.isfinite(v) and lo <= v <= hi for v in q):
        raise ValueError(f"{where}: {key} must hold finite values in [{lo:g}, {hi:g}]")
    if any(b < a for a, b in zip(q, q[1:])) or not q[-1] > q[0]:
        raise ValueError(f"{where}: {key} must be quantiles: non-decreasing, the last above the first")
    return q


def read(params: dict, where: str = "weights") -> dict | None:
    """{"loudness_db": (33 quantiles), "midi": (33 quantiles)} from a safetensors dict
    (pycore.weights.safetensors.load), None when the file has neither tensor."""
    present = [k for k in (LOUDNESS, MIDI) if k in params]
    if not present:
        return None
    if len(present) == 1:
        raise ValueError(f"{where}: has {present[0]} without {({LOUDNESS, MIDI} - set(present)).pop()}")
    return {"loudness_db": _quantiles(params, LOUDNESS, *LOUDNESS_RANGE, where),
            "midi": _quantiles(params, MIDI, *MIDI_RANGE, where)}


def pitch_median(calib: dict | None) -> float | None:
    """The median of the training score's pitch (MIDI; the quantile at probability 1/2)
    of `read`'s dict, None without a calibration (reported beside the singer's median)."""
    return None if calib is None else float(calib["midi"][(CAL_POINTS - 1) // 2])


def pitch_band(calib: dict | None) -> tuple | None:
    """(lo, hi) MIDI: the training score's pitch quantiles at REGISTER_BAND's
    probabilities (points 4 and 28 of 33), the band the register shift moves a singer's
    running mean pitch into (pycore.ops.tone_controls.Rules.pitch_band); None without a
    calibration."""
    if calib is None:
        return None
    last = CAL_POINTS - 1
    return tuple(float(calib["midi"][round(p * last)]) for p in REGISTER_BAND)
