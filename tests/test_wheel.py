"""The wheel, installed where pip puts it: built from this checkout (`pip wheel`, as
`python -m build` does, without network), installed with --no-deps into a temporary venv
whose dependencies come from this environment's site-packages (a plain path: the
checkout's editable install is not visible there), then run from outside the checkout:
`stemtone doctor`, a separation, `stemtone serve` (its pages, runtime and package) and
`stemtone build-site`."""

import json
import os
import subprocess
import sys
import sysconfig
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    if not os.path.isfile(os.path.join(REPO, "node_modules", "pyodide", "pyodide.mjs")):
        pytest.fail("node_modules is missing: run `make test` (or `npm ci`) first")
    tmp = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
         REPO])
    (wheel,) = [p for p in os.listdir(tmp / "dist") if p.endswith(".whl")]
    env_dir = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    py = str(env_dir / "bin" / "python")
    site = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    with open(os.path.join(site, "deps.pth"), "w") as f:  # numpy, wgpu, soundfile, platformdirs
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", str(tmp / "dist" / wheel)])
    home = tmp / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_RUNTIME_DIR="/tmp")
    env.pop("STEMTONE_WEIGHTS", None)
    env.pop("PYTHONPATH", None)
    return {"py": py, "bin": str(env_dir / "bin"), "env": env, "cwd": str(home), "tmp": tmp}


def test_installed_package_is_not_the_checkout(venv):
    out = run([venv["py"], "-c", "import pycore, pycore.paths as p, pycore.weights as w; "
               "print(pycore.__file__); print(p.in_checkout()); print(w.install_dir())"],
              env=venv["env"], cwd=venv["cwd"])
    path, in_checkout, install = out.split("\n")[:3]
    assert not path.startswith(REPO) and in_checkout == "False"
    assert install == os.path.join(venv["env"]["XDG_DATA_HOME"], "stemtone", "weights")


def test_doctor_passes_every_self_check(venv):
    out = run([os.path.join(venv["bin"], "stemtone"), "doctor", "--json"], env=venv["env"], cwd=venv["cwd"])
    checks = json.loads(out)["checks"]
    assert len(checks) >= 40 and all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]


def test_separation_reads_the_weights_folder(venv):
    import audio_fixtures

    weights = os.path.join(venv["env"]["XDG_DATA_HOME"], "stemtone", "weights")
    os.makedirs(weights, exist_ok=True)
    src = os.path.join(REPO, "weights", "spleeter-2stems.safetensors")
    if not os.path.exists(os.path.join(weights, "spleeter-2stems.safetensors")):
        os.symlink(src, os.path.join(weights, "spleeter-2stems.safetensors"))  # as `python -m pycore.weights` puts it
    clip = str(audio_fixtures.real_music_wav(1.0))
    out = os.path.join(venv["cwd"], "separated")
    run([os.path.join(venv["bin"], "stemtone"), "separate", clip, "-o", out, "-q"], env=venv["env"], cwd=venv["cwd"])
    track = os.path.splitext(os.path.basename(clip))[0]
    assert sorted(os.listdir(os.path.join(out, track))) == ["accompaniment.wav", "vocals.wav"]


def test_serve_and_build_site_from_the_wheel(venv):
    proc = subprocess.Popen([os.path.join(venv["bin"], "stemtone"), "serve", "--port", "0"], env=venv["env"],
                            cwd=venv["cwd"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().split(" at ")[1].split("/ ")[0]  # "Stemtone is served at URL/  (...)"
        for path in ["/", "/tone.html", "/diagnostics.html", "/sw.js", "/manifest.webmanifest",
                     "/vendor/pyodide/pyodide.asm.wasm", "/vendor/pyscript/core.js", "/pkg/stemtone.zip",
                     "/weights/models.json", "/weights/ddsp-violin.safetensors"]:
            with urllib.request.urlopen(url + path, timeout=30) as r:
                assert r.status == 200 and r.read(), path
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    out = os.path.join(venv["tmp"], "site")
    run([os.path.join(venv["bin"], "stemtone"), "build-site", out], env=venv["env"], cwd=venv["cwd"])
    assert os.path.isfile(os.path.join(out, "vendor", "pyodide", "pyodide.asm.wasm"))
    assert os.path.isfile(os.path.join(out, "weights", "spleeter-2stems.safetensors"))
