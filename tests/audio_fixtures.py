"""Real music for tests (the fretsonfire-songs-muldjord songs, CC BY-SA 3.0): thin
pytest wrappers around pycore.audio.testdata, which fetches and caches them (see there).
Where the songs cannot be fetched (no apt, offline) the helpers call pytest.skip
with the reason. Nothing of these songs is committed to the repository.
"""

from __future__ import annotations

import functools

import pytest

from pycore.audio import testdata
from pycore.audio.testdata import LICENSE, PACKAGE, SAMPLE_RATE, SONGS  # noqa: F401  (re-exported)


def _skip_if_unavailable(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except testdata.TestDataUnavailable as e:
            pytest.skip(str(e))
    return wrapper


real_music_path = _skip_if_unavailable(testdata.real_music_path)
real_music_clip = _skip_if_unavailable(testdata.real_music_clip)
real_music_wav = _skip_if_unavailable(testdata.real_music_wav)
