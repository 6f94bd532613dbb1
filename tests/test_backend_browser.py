"""What of the browser backend can be checked natively (the rest runs in e2e/)."""

import asyncio
import os
import subprocess
import sys

import pytest

from pycore.gpu import browser as backend_browser
from pycore.gpu.runtime import NoGPUError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_limit_names_become_js_property_names():
    assert backend_browser._camel("max-storage-buffer-binding-size") == "maxStorageBufferBindingSize"
    assert backend_browser._camel("max-compute-workgroup-size-x") == "maxComputeWorkgroupSizeX"
    assert backend_browser._camel("max-bind-groups") == "maxBindGroups"


def test_create_device_outside_pyodide_raises_no_gpu_error():
    with pytest.raises(NoGPUError, match="Pyodide"):
        asyncio.run(backend_browser.create_device())


def test_browser_code_imports_without_numpy():
    """The browser has no numpy: the backend and every self-check module must import without it."""
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "import pycore.gpu.browser, pycore.gpu.selfcheck\n"
        "pycore.gpu.selfcheck.load_all()\n"
        "print(len(pycore.gpu.selfcheck.CHECKS))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
