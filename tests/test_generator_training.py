"""Generator training loops on a handful of encoded cells: weights, manifest, resume."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from app.engine.generation.density import encode
from app.engine.core.registry import load_state_dict
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
    assert entry["architecture"]["species"] == [17, 19, 37, 55]
    assert 0.0 <= vae_entry["metrics"]["species_block_accuracy"] <= 1.0
    assert np.isfinite(vae_entry["metrics"]["validation_mse"])
    assert (out / "density_vae.md").exists()
    # A second learning-rate cycle from the written weights records both stages.
    train_generator.train_vae(epochs=1, batch_size=2, output_dir=out, continue_shipped=True)
    _, entry = load_state_dict("density_vae", out)
    assert entry["epochs"] == 2
    assert [stage["started_from"] for stage in entry["training"]["stages"]] == [
        "random initialisation", "shipped density_vae weights"]


def test_class_weights_ignore_background_and_favour_rare_species():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    weights = train_generator.class_weights(labels, 3)
    assert weights[0] == 0 and weights[2] > weights[1] > 0


def test_species_weights_lift_rare_classes_and_average_one():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    weights = train_generator.species_class_weights(labels, 4)
    frequency = np.bincount(labels, minlength=4) / len(labels)
    assert weights[2] > weights[1] > weights[0] > 0 and weights[3] == 0
    assert (frequency * weights).sum() == pytest.approx(1.0)


def test_differentiable_lattice_matches_the_decoder_reading():
    import torch

    from app.engine.generation.density import COORD_SCALE, coordinate_grid, lattice_from_coords

    channels = coordinate_grid([4.2, 4.2, 4.2]) / COORD_SCALE
    channels[1] += 0.3  # an offset does not change the slope
    expected = lattice_from_coords(channels)
    tensor = torch.from_numpy(channels)[None].requires_grad_(True)
    got = train_generator.lattice_from_coords_torch(tensor)
    assert got.detach().numpy()[0] == pytest.approx(expected, abs=1e-4)
    assert expected == pytest.approx([4.2, 4.2, 4.2], abs=1e-4)
    got.sum().backward()
    assert tensor.grad is not None and torch.isfinite(tensor.grad).all()


def test_block_majority_takes_the_most_common_class_of_each_block():
    import torch

    from app.engine.generation.voxel_models import block_majority

    classes = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    classes[0, :2, :2, :2] = 5
    classes[0, 0, 0, 0] = 3
    classes[0, 2:, 2:, 2:] = 7
    classes[0, 2, 2, 3] = 0
    out = block_majority(classes)
    assert out.shape == (1, 2, 2, 2)
    assert out[0, 0, 0, 0] == 5 and out[0, 1, 1, 1] == 7 and out[0, 1, 0, 0] == 0


def test_vae_batch_rotates_density_and_species_together(voxel_dataset):
    import torch

    from app.engine.generation.density import N_SPECIES_FEATURES

    coords = torch.from_numpy(train_generator.coordinate_grid_batch(voxel_dataset, np.arange(len(voxel_dataset))))
    lookup = np.zeros(256, dtype=np.int64)
    lookup[[17, 19, 37, 55]] = [1, 2, 3, 4]
    inputs, classes = train_generator.vae_batch(voxel_dataset, np.array([0, 1]), coords, lookup,
                                                np.random.default_rng(3))
    assert inputs.shape == (2, 4 + N_SPECIES_FEATURES, 32, 32, 32)
    # Species features are non-zero exactly where the target has an atom, in the same orientation.
    assert torch.equal(inputs[:, 4] > 0, classes > 0)
    assert set(np.unique(classes.numpy())) <= {0, 1, 2, 3, 4}
