"""`python -m pycore.convert`: produce every weights file listed in weights/manifest.json."""

import sys

from . import setup_weights

if __name__ == "__main__":
    try:
        setup_weights()
    except (OSError, RuntimeError, ValueError) as e:
        sys.exit(f"pycore.convert: {e}")
