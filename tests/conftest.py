import os
import sys
import tempfile

import numpy as np
import pytest

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def dev():
    from pycore.gpu.native import get_device

    return get_device()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
