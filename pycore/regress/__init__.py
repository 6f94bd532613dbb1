"""`stemtone regress`: a fixed, seeded suite of metrics (unit, direction, tolerance each),
natively and in headless Chromium, compared against a committed baseline.

  metrics      the metric record, comparison against a baseline, regressions
  cases        kernel cases (browser-safe: the regress page runs them too)
  numerics     their errors against float64 numpy
  dispatch     host µs per dispatch (browser-safe)
  models       demixing parity, speed and memory against the reference implementations
  quality      BSS Eval v4 against ground-truth stems (fast-bss-eval)
  tone         tone transfer's f0-following, loudness correlation and timbre share (the
               timbre check) on real singing
  timbre       each instrument's hold-out spectral loss against its sine baseline (the
               model cards' figures, recomputed)
  browser_models  the models' part of the browser backend: the page's stems against native
  suite        the quick and full suites (native)
  browser      the same suite's browser part: the regress page driven by Playwright
  environment  commit, adapters, drivers, versions, CPU, date
  report       summary.md, report.html, the trend page
"""
