"""Build step of the wheel: copy the files the CLI and the pages need (kernels, pages,
the model manifest and bundled weights, the pinned Pyodide and PyScript files) into the
package, where pycore.paths finds them once installed. Which files: pycore/paths.py's
ASSETS, the one table both read. Everything else is in pyproject.toml."""

import importlib.util
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def load_paths():
    spec = importlib.util.spec_from_file_location("stemtone_paths", os.path.join(HERE, "pycore", "paths.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithAssets(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout itself
            return
        paths = load_paths()
        for kind, (checkout, packaged, _) in paths.ASSETS.items():
            dest = os.path.join(self.build_lib, "pycore", packaged)
            for rel, src in paths.asset_files(kind, os.path.join(HERE, checkout)):
                target = os.path.join(dest, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(src, target)


setup(cmdclass={"build_py": BuildWithAssets})
