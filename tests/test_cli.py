"""The `stemtone` CLI: doctor (self-checks, exit codes) and the kernel benchmark."""

import json

import pytest

from pycore.cli import main as cli
from pycore.gpu import selfcheck


def test_doctor_passes_and_lists_every_check(capsys):
    assert cli.main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in report["checks"]]
    assert set(names) == set(selfcheck.load_all())
    assert all(c["ok"] for c in report["checks"])
    assert report["adapter"]["device"]
    assert report["limits"]["max-storage-buffer-binding-size"] > 0


def test_doctor_exits_nonzero_on_a_failing_check(monkeypatch, capsys):
    async def broken(dev):
        raise AssertionError("value 1.0 at index 0, expected 2.0")

    checks = dict(selfcheck.load_all())
    checks["deliberately_broken"] = broken
    monkeypatch.setattr(selfcheck, "CHECKS", checks)
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  deliberately_broken" in out and "expected 2.0" in out
    assert f"{len(checks) - 1} passed, 1 failed" in out


def test_bench_kernels_quick_reports_ratios_and_phase_drift(capsys):
    assert cli.main(["bench", "kernels", "--quick", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    by = {r["name"].split()[0]: r for r in rows}
    assert set(by) >= {"matmul", "conv2d", "stft", "phase"}
    for r in rows:
        assert r["ours"] >= 0 and r["ref"] >= 0
        if r["ratio"] is not None:
            assert r["ratio"] > 0
    # the phase kernel keeps the oscillator phase; a naive float32 cumsum does not
    assert by["phase"]["ours"] < 1e-3 < by["phase"]["ref"]


def test_unknown_command_is_an_argparse_error():
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])


def test_bench_separate_and_memory_arguments(monkeypatch, capsys):
    """`bench separate -m htdemucs|umxl` goes to the random-weight benchmark with 10 s of
    music by default; `bench memory` parses --lengths and --reduced."""
    from pycore.cli.bench import memory, separate

    calls = []

    def fake_random(dev, model, seconds, progress=True, reduced=False):
        calls.append(("separate", model, seconds))
        return [{"name": "x", "unit": "s", "ours": 1.0, "ref": 2.0, "ratio": 2.0, "note": ""}]

    def fake_memory(dev, model, lengths, reduced=False, progress=True):
        calls.append(("memory", model, lengths, reduced))
        return [{"name": "y", "unit": "MiB", "ours": 1.0, "ref": None, "ratio": None, "note": ""}]

    monkeypatch.setattr(separate, "bench_separate_random", fake_random)
    monkeypatch.setattr(memory, "bench_memory", fake_memory)
    assert cli.main(["bench", "separate", "-m", "htdemucs", "--json"]) == 0
    assert cli.main(["bench", "separate", "-m", "umxl", "--seconds", "4", "--json"]) == 0
    assert cli.main(["bench", "memory", "-m", "umxl", "--lengths", "60,600", "--reduced", "--json"]) == 0
    assert cli.main(["bench", "memory", "-m", "htdemucs", "--json"]) == 0
    assert calls == [("separate", "htdemucs", 10.0), ("separate", "umxl", 4.0),
                     ("memory", "umxl", (60.0, 600.0), True), ("memory", "htdemucs", (60.0, 600.0), False)]
    assert separate.default_seconds("spleeter-2stems") == 30.0
    capsys.readouterr()
    for bad in ("0,60", "a", ""):
        with pytest.raises(SystemExit):
            cli.main(["bench", "memory", "--lengths", bad])
    with pytest.raises(SystemExit):
        cli.main(["bench", "frobnicate"])


def test_bench_separate_random_umxl_reduced():
    """The random-weight benchmark end to end on 1 s with a reduced umxl: both timings
    from this run, their ratio, parity between the two, our GPU peak and the reference
    process's peak RSS (torch alone is > 100 MiB)."""
    pytest.importorskip("torch")
    from pycore.cli.bench.common import BenchUnavailable
    from pycore.cli.bench.separate import bench_separate_random
    from pycore.gpu.native import get_device
    from pycore.audio.testdata import TestDataUnavailable, real_music_clip

    try:
        real_music_clip(1.0)
    except TestDataUnavailable as e:
        pytest.skip(str(e))
    try:
        rows = bench_separate_random(get_device(), "umxl", seconds=1.0, progress=False, reduced=True)
    except BenchUnavailable as e:  # openunmix missing
        pytest.skip(str(e))
    demix, rtf, mem = rows
    assert demix["ours"] > 0 and demix["ref"] > 0 and demix["ratio"] == pytest.approx(demix["ref"] / demix["ours"])
    assert min(demix["sdr_db"].values()) >= 40 and "reduced configuration" in demix["note"]
    assert mem["ours"] > 1 and mem["ref"] > 100
