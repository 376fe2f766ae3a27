"""Build step of the wheel: the shipped ``models/`` and ``resources/`` travel inside the package.

Everything else is configured in ``pyproject.toml``. The folders are copied to ``app/_data/`` of
the build, where :func:`app.engine.core.paths.install_root` finds them in an installed wheel; a
source checkout keeps reading them from the checkout.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED_FOLDERS = ("models", "resources")
PACKAGED_DATA = Path("app") / "_data"


class BuildWithShippedData(build_py):
    """``build_py`` that also copies the shipped folders into ``app/_data``."""

    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        for name in SHIPPED_FOLDERS:
            target = Path(self.build_lib) / PACKAGED_DATA / name
            shutil.copytree(root / name, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", ".*"))


setup(cmdclass={"build_py": BuildWithShippedData})
