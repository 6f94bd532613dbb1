"""pycore.cli.bench.browser: the worker thread's CPU time between two performance marks,
read from a Chrome trace (a generated one here; `stemtone bench runtime --browser`
reads a real one), and how it replaces the page's wall-time figure."""

import json

import pytest

from pycore.cli.bench.browser import thread_cpu_ms, with_thread_cpu
from pycore.cli.bench.common import BenchUnavailable

TASK = "ThreadControllerImpl::RunTask"


def trace(events):
    return json.dumps({"traceEvents": events}).encode()


def mark(name, ts, tid=7):
    return {"name": name, "ph": "I", "pid": 1, "tid": tid, "ts": ts, "cat": "blink.user_timing"}


def task(ts, dur, tdur=None, tid=7, name=TASK):
    e = {"name": name, "ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur, "cat": "toplevel"}
    if tdur is not None:
        e["tdur"] = tdur
    return e


def test_sums_the_thread_time_of_the_marking_threads_tasks_between_the_marks():
    events = [
        task(50, 1000, 900),                 # before the start mark: left out
        mark("start", 100),
        task(200, 3000, 1200),               # thread time counts, not wall time
        task(4000, 500),                     # no thread time: its wall time (an upper bound)
        task(5000, 800, 700, tid=8),         # another thread (the page, SwiftShader): left out
        task(6000, 900, 600, name="RunTask"),  # a nested event, not a top-level task
        mark("end", 9000),
        task(9500, 1000, 1000),              # after the end mark
    ]
    assert thread_cpu_ms(trace(events), "start", "end") == pytest.approx((1200 + 500) / 1e3)


def test_a_trace_without_the_marks_is_an_error():
    with pytest.raises(BenchUnavailable, match="no performance marks 'start' and 'end'"):
        thread_cpu_ms(trace([mark("start", 1), task(2, 3, 3)]), "start", "end")


def row(name, value):
    return {"figure": name, "backend": "browser", "value": value, "unit": "ms"}


def test_the_cpu_time_replaces_the_figure_and_its_wall_time_follows_it():
    rows = [row("fresh dispatch", 1.0), row("htdemucs segment host", 30.0), row("htdemucs weights", 9.0)]
    assert with_thread_cpu(rows, "htdemucs segment host", 12.5) == [
        row("fresh dispatch", 1.0), row("htdemucs segment host", 12.5),
        row("htdemucs segment host wall", 30.0), row("htdemucs weights", 9.0)]
    assert rows[1]["value"] == 30.0                     # the caller's rows are left as they were
    assert with_thread_cpu(rows, "tone block host", 2.0) == rows
