"""Reference implementations (PyTorch, numpy) that parity tests and `stemtone bench`
compare against. Native only, imported on demand: nothing in the product imports them
(they need torch, which only the `test` and `tools` extras install)."""
