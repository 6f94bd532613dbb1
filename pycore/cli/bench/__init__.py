"""`stemtone bench`: every benchmark measures ours next to a reference in the same run
(machines are shared and noisy, so the ratio is what counts). Native only (numpy).

  common          the rows (`--json`), the table, progress lines, timing, the music clip
  kernels         `bench kernels`: WGSL kernels against numpy (OpenBLAS, pocketfft)
  separate        `bench separate`: demixing against the PyTorch CPU reference
  random_weights  Demucs v4 / Open-Unmix with seeded random weights, ours and the reference
  memory          `bench memory`: peak GPU memory against the track's length
  tone            `bench tone`: each tone-transfer stage's real-time factor, PyTorch DDSP
"""
