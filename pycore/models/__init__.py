"""Models built from the WGSL ops: each module holds one network, constructed from the
tensors of a safetensors file (`pycore.weights.safetensors.load`), with attribute names
that mirror the checkpoint's keys. Browser-safe: nothing here imports numpy. Finding a
model's file is pycore.weights' job (weights_path, model_file)."""
