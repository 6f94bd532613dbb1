"""pycore.cli.bench.runtime's pure parts: the demix segments' input noise and the marks
that tell pycore.cli.bench.browser which figures to read from the Chrome trace (the
measurements themselves are benchmarks, not tests)."""

import statistics

from pycore.cli.bench.runtime import marked, marks, noise


def test_noise_is_seeded_float32_gaussian():
    a = noise(20000, seed=5)
    assert a.typecode == "f" and len(a) == 20000
    assert a == noise(20000, seed=5) and a != noise(20000, seed=6)
    assert abs(statistics.fmean(a)) < 0.005             # 7 standard errors (0.1 / sqrt(20000))
    assert abs(statistics.pstdev(a) - 0.1) < 0.003      # 6 standard errors (0.1 / sqrt(40000))


def test_marked_names_the_marks_around_a_label():
    assert marks("htdemucs") == ("stemtone:htdemucs-start", "stemtone:htdemucs-end")
    assert marked("htdemucs segment host", "htdemucs", 1) == {
        "figure": "htdemucs segment host", "start": "stemtone:htdemucs-start",
        "end": "stemtone:htdemucs-end", "units": 1}
