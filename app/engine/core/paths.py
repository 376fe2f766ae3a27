"""Where the application's shipped files live: ``models/`` and ``resources/``.

The answer never depends on the current directory. In order:

1. ``CRYSTAL_DESIGNER_HOME``: a folder holding ``models/`` and ``resources/`` (tests, custom installs);
   ``CRYSTAL_DESIGNER_MODELS`` overrides the models folder alone.
2. A frozen (PyInstaller) bundle: the bundle's data folder (``sys._MEIPASS``).
3. An installed wheel: ``app/_data`` inside the package (copied there by ``setup.py``'s build step).
4. A source checkout: the folder above the ``app`` package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: Folder of ``models/`` and ``resources/`` inside an installed package (see ``setup.py``).
PACKAGED_DATA = "_data"


def install_root() -> Path:
    """Folder holding ``models/`` and ``resources/``."""
    env = os.environ.get("CRYSTAL_DESIGNER_HOME")
    if env:
        return Path(env).expanduser().resolve()
    frozen_root = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and frozen_root:
        return Path(frozen_root)
    package = Path(__file__).resolve().parents[2]
    packaged = package / PACKAGED_DATA
    if (packaged / "models").is_dir():
        return packaged
    return package.parent


def models_dir() -> Path:
    """Folder of the trained weights, their manifest and model cards."""
    env = os.environ.get("CRYSTAL_DESIGNER_MODELS")
    return Path(env).expanduser().resolve() if env else install_root() / "models"


def resources_dir() -> Path:
    """Folder of icons, example structures and other shipped resources."""
    return install_root() / "resources"


def examples_dir() -> Path:
    """Example crystal files shipped with the application."""
    return resources_dir() / "examples"


def cache_dir() -> Path:
    """Folder for featurised training data (``CRYSTAL_DESIGNER_CACHE`` or ``~/.cache``)."""
    env = os.environ.get("CRYSTAL_DESIGNER_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "crystal-designer"
    base.mkdir(parents=True, exist_ok=True)
    return base
