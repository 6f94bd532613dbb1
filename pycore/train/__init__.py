"""Training-side code (PyTorch): model definitions that mirror the GPU modules, so that
trained weights load into them by name. Native only; the product never imports this
package (torch is not a runtime dependency)."""
