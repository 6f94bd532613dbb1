"""Coverage-guided fuzzing of the readers of untrusted bytes with atheris (libFuzzer).

    python tests/fuzz_atheris.py READER [-runs=100000] [-max_total_time=60]

READER: safetensors | torch_zip | pickle | wav | manifest. The targets and the
property are tests/test_fuzz.py's (a result or a ValueError); any other exception
is a crash that libFuzzer reports with the input that caused it. Seeds are the same
generated valid files. atheris is optional (not in any extra): `pip install atheris`.
"""

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

with atheris.instrument_imports():
    import test_fuzz as T
    from torch_zip_asm import torch_zip

TARGETS = {
    "safetensors": (T.read_safetensors, T.seed_safetensors),
    "torch_zip": (T.read_checkpoint, T.seed_torch_zip),
    "pickle": (lambda d: T.read_checkpoint(torch_zip(d, {"0": bytes(16)})),
               lambda: T.program(T.pdict(a=T.tensor((2, 2), (2, 1))))),
    "wav": (T.decode_wav, T.seed_wav),
    "manifest": (T.read_manifest, T.seed_manifest),
}


def main():
    reader = sys.argv.pop(1)
    fn, seed = TARGETS[reader]

    def one(data):
        try:
            fn(bytes(data))
        except ValueError:
            pass

    corpus = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"stemtone-fuzz-{reader}")
    os.makedirs(corpus, exist_ok=True)
    with open(os.path.join(corpus, "seed"), "wb") as f:
        f.write(seed())
    atheris.Setup([sys.argv[0], corpus, *sys.argv[1:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
