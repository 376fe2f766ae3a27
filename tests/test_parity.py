"""Parity samples: bounded, seeded, finite, and recorded in one manifest entry only."""

import json

import numpy as np
import pytest

from app.engine.training.parity import MAX_POINTS, parity_sample, record_parity_sample, sample_is_valid


def test_sample_is_bounded_seeded_and_keeps_the_full_mae():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(2000, 2))
    predicted = true + rng.normal(scale=0.1, size=true.shape)
    true[::3, 1] = np.nan  # the second target is labelled on two thirds of the rows
    sample = parity_sample(true, predicted, ["a", "b"])
    assert set(sample) == {"a", "b"}
    assert len(sample["a"]["true"]) == len(sample["a"]["predicted"]) == MAX_POINTS
    assert sample["a"]["count"] == 2000 and sample["b"]["count"] == 2000 - len(range(0, 2000, 3))
    ok = np.isfinite(true[:, 1])
    assert sample["b"]["mae"] == pytest.approx(np.abs(predicted[ok, 1] - true[ok, 1]).mean())
    assert all(np.isfinite(sample["b"]["true"]))
    assert parity_sample(true, predicted, ["a", "b"]) == sample  # same seed, same rows
    assert parity_sample(true, predicted, ["a", "b"], seed=2) != sample
    # Rounded to 4 digits of the largest magnitude (|x| < 10 here: 3 decimals), and the pairs stay pairs.
    assert all(round(v, 3) == v for v in sample["a"]["true"] + sample["a"]["predicted"])
    assert parity_sample(true * 1e-3, predicted * 1e-3, ["a", "b"])["a"]["true"][0] == pytest.approx(
        sample["a"]["true"][0] * 1e-3, abs=1e-6)
    for t, p in zip(sample["a"]["true"][:20], sample["a"]["predicted"][:20]):
        row = np.argmin(np.abs(true[:, 0] - t) + np.abs(predicted[:, 0] - p))
        assert t == pytest.approx(true[row, 0], abs=5e-4)
        assert p == pytest.approx(predicted[row, 0], abs=5e-4)
    assert sample_is_valid(sample) and not sample_is_valid({}) and not sample_is_valid({"a": {"true": [1.0]}})
    json.dumps(sample)


def test_small_sets_are_kept_whole_and_unlabelled_targets_left_out():
    sample = parity_sample(np.array([1.0, 2.0, np.nan]), np.array([1.5, np.nan, 3.0]), ["x"])
    assert sample == {"x": {"true": [1.0], "predicted": [1.5], "count": 1, "mae": 0.5}}
    assert parity_sample(np.full((4, 1), np.nan), np.zeros((4, 1)), ["x"]) == {}
    with pytest.raises(ValueError):
        parity_sample(np.zeros((4, 2)), np.zeros((4, 2)), ["only one"])


def test_record_changes_only_its_entry(tmp_path):
    manifest = {"models": {"a": {"file": "a.pt", "metrics": {"validation_mae": {"x": 0.1}}},
                           "b": {"file": "b.pt", "metrics": {"n": 3}}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    sample = parity_sample(np.arange(5.0), np.arange(5.0) + 0.25, ["x"])
    record_parity_sample("a", sample, "crystal-designer evaluate a --record", tmp_path)
    written = json.loads((tmp_path / "manifest.json").read_text())["models"]
    assert written["b"] == manifest["models"]["b"]
    assert written["a"]["metrics"]["validation_mae"] == {"x": 0.1}
    assert written["a"]["metrics"]["parity_sample"] == sample
    assert written["a"]["metrics"]["parity_sample_command"] == "crystal-designer evaluate a --record"
    with pytest.raises(KeyError):
        record_parity_sample("missing", sample, "", tmp_path)


def test_property_evaluation_records_a_parity_sample(tmp_path, monkeypatch):
    from pymatgen.core import Lattice, Structure

    from app.engine.training import train_property
    from app.engine.training.datasets import LabelledCrystal
    from app.engine.training.feature_cache import featurise_graphs
    from app.engine.training.recipes import Recipe

    records = []
    for i, (cation, a) in enumerate([("Na", 5.64), ("K", 6.29), ("Li", 4.07), ("Rb", 6.59), ("Cs", 7.0)] * 4):
        s = Structure(Lattice.cubic(a / 2 + 0.01 * i), [cation, "Cl"], [[0, 0, 0], [0.5] * 3])
        records.append(LabelledCrystal(f"test-{i}", "synthetic", s.as_dict(), "dict", {"target_a": -a / 3}))
    dataset = featurise_graphs(records, workers=1)
    monkeypatch.setenv("CRYSTAL_DESIGNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(train_property, "load_dataset", lambda name: dataset)
    monkeypatch.setattr(train_property, "is_validation", lambda material_id: material_id.endswith(("1", "5")))
    monkeypatch.setattr(train_property, "validation_records",
                        lambda names: [r for r in records if r.material_id.endswith(("1", "5"))])
    recipe = Recipe(dataset="synthetic", targets=["target_a"], description="test model", units={"target_a": "eV"},
                    sources=["synthetic rock salts"], epochs=1, batch_size=8,
                    architecture={"atom_dim": 8, "hidden_dim": 8, "n_conv": 1})
    monkeypatch.setitem(train_property.RECIPES, "tiny", recipe)
    out = tmp_path / "models"
    entry = train_property.train("tiny", output_dir=out)
    assert sample_is_valid(entry["metrics"]["parity_sample"])  # training writes one too
    metrics = train_property.evaluate("tiny", out, record=True)
    written = json.loads((out / "manifest.json").read_text())["models"]["tiny"]["metrics"]
    assert written["parity_sample"] == metrics["parity_sample"]
    assert written["parity_sample"]["target_a"]["count"] == metrics["validation_count"] == 4
    assert written["parity_sample"]["target_a"]["mae"] == pytest.approx(metrics["validation_mae"]["target_a"], rel=1e-4)
