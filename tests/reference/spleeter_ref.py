"""Alias: the PyTorch Spleeter reference lives in pycore/reference/spleeter_torch.py
(so `stemtone bench separate` can time it too). `from reference import spleeter_ref`
gives that very module, private helpers included."""

import sys

from pycore.reference import spleeter_torch

sys.modules[__name__] = spleeter_torch
