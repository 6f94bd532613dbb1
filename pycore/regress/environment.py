"""Where a regression run ran: commit, adapters and drivers, browser and Pyodide/PyScript
versions, CPU, date (results.json's "environment")."""

from __future__ import annotations

import datetime
import json
import os
import platform
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


def adapter_class(env) -> str:
    """The baseline's adapter class: lavapipe / swiftshader / the adapter's own name."""
    names = " ".join(env.get("adapters", {}).values()).lower()
    return "+".join(k for k in ("lavapipe", "llvmpipe", "swiftshader") if k in names) or "other"
