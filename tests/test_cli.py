"""The `stemtone` CLI: doctor (self-checks, exit codes) and the kernel benchmark."""

import json

import pytest

from pycore import cli, selfcheck


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
