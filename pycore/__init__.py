"""Stemtone core: GPU runtime, WGSL-backed ops, models and pipelines."""
__version__ = "0.1.0"
