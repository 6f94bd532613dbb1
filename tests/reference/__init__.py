"""Reference implementations (PyTorch / numpy) that parity tests and benchmarks compare against."""
