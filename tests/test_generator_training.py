"""Generator training loops on a handful of encoded cells: weights, manifest, resume."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from app.engine.density import encode
from app.engine.registry import load_state_dict
from app.engine.training import train_generator
from app.engine.training.generator_data import VoxelDataset


@pytest.fixture
def voxel_dataset():
    cells = [Structure.from_spacegroup("Pm-3m", Lattice.cubic(a), [x, "Cl"], [[0, 0, 0], [.5, .5, .5]])
             for a, x in [(4.1, "Cs"), (3.9, "Rb"), (4.3, "Cs"), (4.0, "K"), (4.2, "Rb"), (3.8, "K")]]
    encoded = [encode(c) for c in cells]
    return VoxelDataset(ids=np.array([f"t-{i}" for i in range(6)]), sources=np.array(["test"] * 6),
                        structures=[e.structure.as_dict() for e in encoded],
                        density=np.stack([e.density for e in encoded]).astype(np.float16),
                        species=np.stack([e.species for e in encoded]).astype(np.uint8))


def test_unet_then_vae_train_and_write_manifest(voxel_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTAL_DESIGNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(train_generator, "load_voxel_dataset", lambda: voxel_dataset)
    monkeypatch.setattr(train_generator, "split", lambda d: (np.arange(4), np.arange(4, 6)))
    monkeypatch.setattr(train_generator, "formation_energy_conditions", lambda d, rows, folder=None: np.linspace(-2, 0, len(rows)))
    out = tmp_path / "models"
    unet_entry = train_generator.train_unet(epochs=1, batch_size=2, output_dir=out)
    state, entry = load_state_dict("segmentation_unet", out)
    assert entry["architecture"]["species"] == [17, 19, 37, 55]
    assert 0.0 <= unet_entry["metrics"]["site_voxel_accuracy"] <= 1.0
    vae_entry = train_generator.train_vae(epochs=1, batch_size=2, output_dir=out)
    _, entry = load_state_dict("density_vae", out)
    edges = entry["architecture"]["decile_edges_eV_per_atom"]
    assert len(edges) == 9 and edges == sorted(edges)
    assert np.isfinite(vae_entry["metrics"]["validation_mse"])
    assert (out / "density_vae.md").exists()


def test_class_weights_ignore_background_and_favour_rare_species():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    weights = train_generator.class_weights(labels, 3)
    assert weights[0] == 0 and weights[2] > weights[1] > 0
