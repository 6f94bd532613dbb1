"""`python -m pycore.weights [NAME ... | all]`: produce the weights files listed in
weights/manifest.json (default: every model not marked "default": false)."""

import sys

from .setup import setup_weights

if __name__ == "__main__":
    try:
        setup_weights(names=sys.argv[1:] or None)
    except (OSError, RuntimeError, ValueError) as e:
        sys.exit(f"pycore.weights: {e}")
