"""Training pipeline on a tiny synthetic set: batching, split, checkpoints, manifest and card."""


import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from app.engine.properties.graph import collate
from app.engine.core.registry import load_state_dict
from app.engine.training import train_property
from app.engine.training.datasets import LabelledCrystal, is_validation
from app.engine.training.feature_cache import featurise_graphs as featurise
from app.engine.training.recipes import Recipe


def _rock_salts():
    records = []
    for i, (cation, a) in enumerate([("Na", 5.64), ("K", 6.29), ("Li", 4.07), ("Rb", 6.59), ("Cs", 7.0),
                                     ("Ag", 5.55), ("Na", 5.9), ("K", 6.0), ("Li", 4.3), ("Rb", 6.3)] * 3):
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        records.append(LabelledCrystal(f"test-{i}", "synthetic", s.as_dict(), "dict",
                                       {"target_a": -a / 3, "target_b": float(i % 2) if i % 3 else float("nan")}))
    return records


@pytest.fixture
def tiny_dataset():
    return featurise(_rock_salts(), workers=1)


def test_make_batch_matches_collate(tiny_dataset):
    rows = np.array([3, 0, 7])
    batch = train_property.make_batch(tiny_dataset, rows)
    reference = collate([tiny_dataset.graph(i) for i in rows])
    for field in ("atomic_numbers", "neighbor_index", "neighbor_distance", "neighbor_mask", "crystal_index"):
        np.testing.assert_array_equal(getattr(batch, field), getattr(reference, field))


def test_split_is_deterministic_and_disjoint(tiny_dataset):
    train_rows, val_rows = train_property.split_indices(tiny_dataset, ["target_a"])
    assert not set(train_rows) & set(val_rows)
    assert len(train_rows) + len(val_rows) == len(tiny_dataset)
    assert all(is_validation(str(tiny_dataset.ids[i])) for i in val_rows)
    assert is_validation("mp-1") == is_validation("mp-1")


def test_train_writes_weights_manifest_and_card_and_resumes(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("CRYSTAL_DESIGNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(train_property, "load_dataset", lambda name: tiny_dataset)
    # Every id in validation would leave nothing to learn from; force a mixed split.
    monkeypatch.setattr(train_property, "is_validation", lambda material_id: material_id.endswith(("1", "5")))
    recipe = Recipe(dataset="synthetic", targets=["target_a", "target_b"], description="test model",
                    units={"target_a": "eV", "target_b": "1"}, sources=["synthetic rock salts"],
                    epochs=3, batch_size=8, architecture={"atom_dim": 8, "hidden_dim": 8, "n_conv": 1})
    monkeypatch.setitem(train_property.RECIPES, "tiny", recipe)
    out = tmp_path / "models"
    entry = train_property.train("tiny", output_dir=out)
    state, manifest_entry = load_state_dict("tiny", out)  # sha256 verified
    assert manifest_entry["epochs"] == 3 and manifest_entry["architecture"]["atom_dim"] == 8
    assert set(entry["metrics"]["validation_mae"]) == {"target_a", "target_b"}
    assert np.isfinite(entry["metrics"]["validation_mae"]["target_a"])
    card = (out / "tiny.md").read_text()
    assert "synthetic rock salts" in card and "target_a" in card
    # A rerun resumes from the finished checkpoint instead of training again.
    calls = []
    monkeypatch.setattr(train_property.torch.optim.AdamW, "step", lambda *a, **k: calls.append(1))
    train_property.train("tiny", output_dir=out)
    assert calls == []
