"""Real solo singing for tests: the Vocadito clips of pycore.audio.testdata (CC BY 4.0),
fetched on first use; where that fails (offline) the helpers call pytest.skip with the
reason. Nothing of the recordings is committed."""

from __future__ import annotations

import numpy as np
import pytest

from pycore.audio import testdata

CLIPS = testdata.SINGING_CLIPS
LICENSE = testdata.SINGING_LICENSE


def vocadito_path(clip: int):
    try:
        return testdata.vocadito_path(clip)
    except testdata.TestDataUnavailable as e:
        pytest.skip(str(e))


def vocadito(clip: int, sample_rate=16000, seconds=None, offset=0.0) -> np.ndarray:
    try:
        return testdata.vocadito(clip, sample_rate, seconds, offset)
    except testdata.TestDataUnavailable as e:
        pytest.skip(str(e))
