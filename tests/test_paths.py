"""Where the shipped folders are found: checkout, installed wheel, environment override."""

import importlib.util
import shutil
from pathlib import Path

import app.engine.core.paths as paths


def _paths_module_installed_at(root: Path):
    """A copy of the paths module as it sits in an installed package under ``root``."""
    target = root / "app" / "engine" / "core" / "paths.py"
    target.parent.mkdir(parents=True)
    shutil.copy(paths.__file__, target)
    spec = importlib.util.spec_from_file_location("installed_paths", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_checkout_reads_its_own_folders(monkeypatch):
    monkeypatch.delenv("CRYSTAL_DESIGNER_HOME", raising=False)
    monkeypatch.delenv("CRYSTAL_DESIGNER_MODELS", raising=False)
    checkout = Path(paths.__file__).resolve().parents[3]
    assert paths.install_root() == checkout and (paths.models_dir() / "manifest.json").exists()


def test_an_installed_wheel_reads_the_packaged_data(tmp_path, monkeypatch):
    monkeypatch.delenv("CRYSTAL_DESIGNER_HOME", raising=False)
    monkeypatch.delenv("CRYSTAL_DESIGNER_MODELS", raising=False)
    installed = _paths_module_installed_at(tmp_path / "site-packages")
    assert installed.install_root() == tmp_path / "site-packages"  # no packaged data: the folder above the package
    packaged = tmp_path / "site-packages" / "app" / paths.PACKAGED_DATA
    (packaged / "models").mkdir(parents=True)
    assert installed.install_root() == packaged
    assert installed.models_dir() == packaged / "models" and installed.resources_dir() == packaged / "resources"
    monkeypatch.setenv("CRYSTAL_DESIGNER_HOME", str(tmp_path / "custom"))
    assert installed.install_root() == (tmp_path / "custom").resolve()
