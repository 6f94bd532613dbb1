"""Where a regression run ran: commit, adapters and drivers, browser and Pyodide/PyScript
versions, CPU, date (results.json's "environment")."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def commit() -> str:
    try:
        r = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                           timeout=10)
        return r.stdout.strip() or "unknown"
    except OSError:
        return "unknown (no git)"


def cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def web_versions() -> str:
    try:
        with open(os.path.join(ROOT, "package.json"), encoding="utf-8") as f:
            deps = json.load(f)["dependencies"]
        return f"pyodide {deps.get('pyodide')}, pyscript {deps.get('@pyscript/core')}"
    except (OSError, ValueError, KeyError):
        return "unknown"


def environment(native_dev=None, browser=None) -> dict:
    """browser: {"adapter", "version"} from the regress page, or None."""
    import wgpu

    env = {"commit": commit(), "date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu(),
           "python": platform.python_version(), "adapters": {}}
    if native_dev is not None:
        i = native_dev.adapter_info
        env["adapters"]["native"] = native_dev.describe()
        env["native_driver"] = f"wgpu-py {wgpu.__version__}, {i.get('backend_type', '')} {i.get('description', '')}".strip()
    if browser is not None:
        env["adapters"]["browser"] = browser.get("adapter", "?")
        env["browser"] = browser.get("version", "?")
        env["web"] = web_versions()
    return env


BASELINES = os.path.join(ROOT, "tests", "baselines")
KNOWN_CLASSES = {"llvmpipe": "lavapipe", "lavapipe": "lavapipe", "swiftshader": "swiftshader"}


def adapter_class(description: str) -> str:
    """A short name for an adapter ("native: llvmpipe / ..." -> "lavapipe", "browser:
    google / swiftshader" -> "swiftshader"; others: the words of the description's first
    two " / " parts (name, architecture or driver) before any "(", each once, lowercase,
    joined by "-", e.g. "nvidia-geforce-rtx-4090")."""
    text = description.split(":", 1)[-1].lower()
    for key, name in KNOWN_CLASSES.items():
        if key in text:
            return name
    words = re.findall(r"[a-z0-9]+", " ".join(text.split("(")[0].split("/")[:2]))
    return "-".join(dict.fromkeys(words))[:60] or "unknown"


def baseline_file(backend: str, env: dict) -> str:
    """tests/baselines/<backend>-<adapter class>.json for a run's environment."""
    return os.path.join(BASELINES, f"{backend}-{adapter_class(env['adapters'][backend])}.json")
