"""Shared fixtures: tiny random-weight models in a temporary models folder, example crystals."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "resources" / "examples"

TINY_TARGETS = {
    "formation_energy": ["formation_energy_per_atom"],
    "band_gap": ["band_gap"],
    "elastic": ["log10_bulk_modulus", "log10_shear_modulus", "poisson_ratio"],
    "optical": ["refractive_index"],
}


def write_tiny_models(folder: Path, seed: int = 0) -> Path:
    """Random-weight models (tiny widths) for every shipped model, with a valid manifest and index."""
    import torch

    from app.engine.properties.cgcnn import CGCNN, CGCNNConfig
    from app.engine.core.registry import save_manifest_entry, sha256_of
    from app.engine.generation.voxel_models import ConditionalVAE3D, UNet3D, UNetConfig, VAEConfig

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    for name, targets in TINY_TARGETS.items():
        config = CGCNNConfig(targets=targets, atom_dim=8, hidden_dim=8, n_conv=1)
        model = CGCNN(config)
        path = folder / f"{name}.pt"
        torch.save(model.state_dict(), path)
        save_manifest_entry(name, {"file": path.name, "sha256": sha256_of(path), "kind": "cgcnn",
                                   "architecture": config.to_dict(), "created": "test"}, folder)
    vae_config = VAEConfig(latent_dim=8, widths=[4, 4, 8, 8], species=[8, 11, 17, 22, 38], species_head_width=4)
    unet_config = UNetConfig(species=[11, 17, 38, 22, 8], widths=[4, 8], in_channels=2)
    for name, model, architecture in (
        ("density_vae", ConditionalVAE3D(vae_config),
         {**vae_config.to_dict(), "decile_edges_eV_per_atom": [-3 + 0.3 * i for i in range(9)]}),
        ("segmentation_unet", UNet3D(unet_config), unet_config.to_dict()),
    ):
        path = folder / f"{name}.pt"
        torch.save(model.state_dict(), path)
        save_manifest_entry(name, {"file": path.name, "sha256": sha256_of(path), "kind": name,
                                   "architecture": architecture, "created": "test"}, folder)
    write_tiny_pointnet(folder)
    with gzip.open(folder / "training_index.json.gz", "wt") as handle:
        json.dump({"formulas": {"NaCl": {"225": ["mp-22862"]}}}, handle)
    write_tiny_structure_index(folder)
    shutil.copy(REPO / "models" / "element_references.json", folder / "element_references.json")
    return folder


def write_tiny_pointnet(folder: Path) -> None:
    """A tiny random-weight PointNet (the six property targets) with its manifest entry."""
    import torch

    from app.engine.core.registry import save_manifest_entry, sha256_of
    from app.engine.properties.pointnet import PointNet, PointNetConfig

    config = PointNetConfig(targets=[t for targets in TINY_TARGETS.values() for t in targets], input_widths=[8, 8],
                            output_widths=[8, 16], tnet_widths=[8, 8], head_widths=[8])
    path = folder / "pointnet.pt"
    torch.save(PointNet(config).state_dict(), path)
    save_manifest_entry("pointnet", {"file": path.name, "sha256": sha256_of(path), "kind": "pointnet",
                                     "architecture": config.to_dict(), "created": "test"}, folder)


def write_tiny_structure_index(folder: Path) -> None:
    """A structure index of rock-salt NaCl (mp-22862) with its manifest entry."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    from app.engine.core.registry import save_manifest_entry, sha256_of
    from app.engine.generation.novelty import STRUCTURE_INDEX_FILE, STRUCTURE_INDEX_NAME, index_arrays

    rock_salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    path = folder / STRUCTURE_INDEX_FILE
    np.savez_compressed(path, **index_arrays([("mp-22862", rock_salt)]))
    save_manifest_entry(STRUCTURE_INDEX_NAME, {"file": path.name, "sha256": sha256_of(path),
                                               "kind": STRUCTURE_INDEX_NAME, "created": "test"}, folder)


@pytest.fixture
def tiny_models(tmp_path, monkeypatch) -> Path:
    """A models folder of tiny random models; CRYSTAL_DESIGNER_MODELS points at it."""
    folder = write_tiny_models(tmp_path / "models")
    monkeypatch.setenv("CRYSTAL_DESIGNER_MODELS", str(folder))
    return folder


@pytest.fixture
def example(request):
    """Path of a shipped example CIF by stem, e.g. ``example("NaCl")``."""
    return lambda stem: EXAMPLES / f"{stem}.cif"


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path, monkeypatch):
    """Tests never read or write the user's real settings, caches or sessions."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


def packages_loaded_by(modules, packages) -> list[str]:
    """Modules of ``packages`` (top-level names) in ``sys.modules`` after a fresh interpreter
    imports ``modules``; the layering tests expect an empty list."""
    code = ("import importlib, sys\n"
            f"for name in {list(modules)!r}: importlib.import_module(name)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {tuple(packages)!r})))\n")
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(out.stdout)


@pytest.fixture
def imported_packages():
    """:func:`packages_loaded_by`, for tests in any folder."""
    return packages_loaded_by
