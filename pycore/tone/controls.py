"""The tone engine's per-frame control constants and the octave fold: what the live page
shows and what pycore.tone.stream computes with (one source for both). Pure Python, no
imports beyond math: the page's main thread imports it without loading the engine.
What each constant does is described in pycore.tone.stream's module docstring."""

from __future__ import annotations

import math

VOICED = 0.5                      # CREPE confidence at or above which a frame is voiced
SILENCE_DB = -70.0                # input loudness below which the output is gated off
GATE_FRAMES = 4                   # gate ramps over this many frames (16 ms) to avoid clicks
HOLD_FRAMES = 25                  # unvoiced frames (100 ms) a note carries on through
LEVEL_FRAMES = 4                  # time constant of the output level correction (16 ms)
LEVEL_MAX_DB = 12.0               # largest level correction either way
AUTO_FRAMES = 750                 # voiced frames (3 s) of the input's running loudness mean
HEADROOM_DB = 6.0                 # the level stage aims this far below the input: loud singing is not limited
LEVEL_PEAK = 0.95                 # a correction that would push a frame's peak past this stops there
DEFAULT_RANGE = (48, 84)          # MIDI range when a model states none (C3 .. C6)
CAL_PRIOR_FRAMES = 2000           # the calibration's prior weighs as this many voiced frames (8 s): chosen on
                                  # vocadito 14 (6 s at 1 s), the output's loudness correlation with the input
                                  # against the uncalibrated engine's (saxophone 0.903): 250 frames 0.894,
                                  # 750 0.899, 2000 0.902 (a young histogram's map moves, the level stage lags it)
CAL_FRAMES = 7500                 # voiced frames (30 s) the calibration's histogram remembers
REGISTER_MARGIN = 1.0 / 12.0      # octaves the shifted mean pitch may stray outside the model's band before
                                  # a later note changes the register shift (hysteresis): one semitone, the
                                  # median change of the running mean pitch from one note start to the
                                  # next on the sung training melodies (1.2-1.3 semitones past their first
                                  # 3 s; not chosen on test clips)


def fold_f0(f0_hz: float, lo_midi: float, hi_midi: float) -> float:
    """f0 moved by whole octaves into [lo_midi, hi_midi] (MIDI note numbers); unchanged
    when already inside. The range spans at least an octave, so a fold always lands."""
    if f0_hz <= 0 or not math.isfinite(f0_hz):
        return f0_hz
    midi = 69.0 + 12.0 * math.log2(f0_hz / 440.0)
    if midi < lo_midi:
        f0_hz *= 2.0 ** math.ceil((lo_midi - midi) / 12.0)
    elif midi > hi_midi:
        f0_hz /= 2.0 ** math.ceil((midi - hi_midi) / 12.0)
    return f0_hz
