"""The PointNet predictor with tiny random weights: point clouds, invariances, records, CLI, training."""

import json

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from app.cli import main
from app.engine.core.elements import FEATURE_LENGTH
from app.engine.core.errors import StructureReadError
from app.engine.core.property_table import PROPERTY_KEYS
from app.engine.io.crystal_io import read_crystal_file
from app.engine.properties.point_cloud import (CELL_DESCRIPTOR_LENGTH, DISTANCE_CENTRES, ENVIRONMENT_LENGTH,
                                               FULL_POINT_FEATURE_LENGTH, POINT_FEATURE_LENGTH, collate_clouds,
                                               environment_features, point_cloud)
from app.engine.properties.pointnet import PointNet, PointNetConfig, batch_to_tensors, masked_max

TARGETS = ["formation_energy_per_atom", "band_gap", "log10_bulk_modulus", "log10_shear_modulus",
           "poisson_ratio", "refractive_index"]


def _structure(example, stem):
    return read_crystal_file(example(stem))[0].structure


def _tiny_model(seed=0, **options):
    torch.manual_seed(seed)
    config = PointNetConfig(targets=TARGETS, input_widths=[8, 8], output_widths=[8, 16], tnet_widths=[8, 8],
                            head_widths=[8], **options)
    model = PointNet(config).eval()
    # Random (not identity) T-Nets, so the invariance tests also cover the learnt transforms.
    for tnet in (model.input_tnet, model.feature_tnet):
        torch.nn.init.normal_(tnet.head[-1].weight, std=0.05)
    return model


def _rotated(structure, angles_deg=(30.0, 50.0, 70.0)):
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    lattice = Lattice(structure.lattice.matrix @ rotation.T)
    return Structure(lattice, structure.species, structure.frac_coords)


def test_point_cloud_shapes_and_centring(example):
    structure = _structure(example, "SrTiO3")
    cloud = point_cloud(structure)
    assert cloud.n_atoms == len(structure) == 5
    assert cloud.coordinates.shape == (5, 3) and cloud.cell.shape == (CELL_DESCRIPTOR_LENGTH,)
    np.testing.assert_allclose(cloud.coordinates.mean(axis=0), 0, atol=1e-5)
    assert cloud.cell[6] == pytest.approx(structure.volume / 5, rel=1e-5)
    small = point_cloud(_structure(example, "Fe"))
    assert small.n_atoms < 5
    batch = collate_clouds([cloud, small])
    assert POINT_FEATURE_LENGTH == 3 + FEATURE_LENGTH
    assert batch.points.shape == (2, 5, FULL_POINT_FEATURE_LENGTH) == (2, 5, POINT_FEATURE_LENGTH + ENVIRONMENT_LENGTH)
    assert batch.mask.tolist() == [[True] * 5, [True] * small.n_atoms + [False] * (5 - small.n_atoms)]
    assert not batch.points[1, small.n_atoms:].any()


def test_point_cloud_keeps_interatomic_distances_and_ignores_rotation(example):
    structure = _structure(example, "TiO2_rutile")
    cloud, rotated = point_cloud(structure), point_cloud(_rotated(structure))
    np.testing.assert_allclose(cloud.coordinates, rotated.coordinates, atol=1e-4)
    np.testing.assert_allclose(cloud.cell, rotated.cell, rtol=1e-5, atol=1e-6)
    # Wrapped into the reduced cell: each distance equals a periodic-image distance of the crystal.
    d = np.linalg.norm(cloud.coordinates[0] - cloud.coordinates[1])
    images = [np.linalg.norm(structure[0].coords - structure[1].coords - structure.lattice.get_cartesian_coords(t))
              for t in np.array(np.meshgrid(*[[-1, 0, 1]] * 3)).T.reshape(-1, 3)]
    assert min(abs(d - x) for x in images) < 1e-4


def test_environment_features_see_the_neighbours_across_the_cell_faces(example):
    structure = _structure(example, "NaCl")
    cloud, rotated = point_cloud(structure), point_cloud(_rotated(structure))
    # Rock salt: 6 unlike neighbours at a/2, then 6 like ones at a/sqrt(2) (most across the cell faces).
    assert (cloud.neighbor_distances[:, :6] < cloud.neighbor_distances[:, 6:].min()).all()
    chlorine, sodium = 17, 11
    assert set(cloud.neighbor_numbers[cloud.atomic_numbers == sodium, :6].ravel()) == {chlorine}
    np.testing.assert_allclose(cloud.neighbor_distances, rotated.neighbor_distances, atol=1e-4)
    features = environment_features(cloud.neighbor_numbers, cloud.neighbor_distances)
    assert features.shape == (cloud.n_atoms, ENVIRONMENT_LENGTH)
    # The histogram holds all 12 neighbours; the mean neighbour feature is a weighted mean of element features.
    histogram = features[:, :len(DISTANCE_CENTRES)]
    assert histogram.sum(axis=1) == pytest.approx(12 * np.sqrt(np.pi) * 0.25 / 0.25, rel=0.1)
    from app.engine.core.elements import element_feature_table

    table = element_feature_table()
    row = int(np.flatnonzero(cloud.atomic_numbers == sodium)[0])
    np.testing.assert_allclose(features[row, len(DISTANCE_CENTRES):].sum(), table[chlorine].sum(), rtol=1e-5)
    batch = collate_clouds([cloud])
    np.testing.assert_allclose(batch.points[0, :, POINT_FEATURE_LENGTH:], features, rtol=1e-6)


def test_a_seed_width_model_reads_only_its_columns(example):
    seed_model = _tiny_model()  # point_features = POINT_FEATURE_LENGTH: coordinates and element features only
    full_model = _tiny_model(point_features=FULL_POINT_FEATURE_LENGTH)
    batch = batch_to_tensors(collate_clouds([point_cloud(_structure(example, "GaAs"))]))
    changed = batch_to_tensors(collate_clouds([point_cloud(_structure(example, "GaAs"))]))
    changed.points[..., POINT_FEATURE_LENGTH:] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(seed_model.forward_batch(batch), seed_model.forward_batch(changed))
        assert not torch.allclose(full_model.forward_batch(batch), full_model.forward_batch(changed))


def test_point_cloud_refuses_unusable_structures():
    empty = Structure(Lattice.cubic(3), [], [])
    with pytest.raises(StructureReadError, match="no atoms"):
        point_cloud(empty)
    disordered = Structure(Lattice.cubic(3), [{"Na": 0.5, "K": 0.5}], [[0, 0, 0]])
    with pytest.raises(StructureReadError, match="partially occupied"):
        point_cloud(disordered)


def test_output_does_not_depend_on_atom_order(example):
    model = _tiny_model()
    cloud = point_cloud(_structure(example, "Cu2MnAl"))
    batch = batch_to_tensors(collate_clouds([cloud]))
    permutation = torch.randperm(cloud.n_atoms, generator=torch.Generator().manual_seed(1))
    assert cloud.n_atoms > 2 and not torch.equal(permutation, torch.arange(cloud.n_atoms))
    with torch.no_grad():
        plain = model.forward_batch(batch)
        shuffled = model(batch.points[:, permutation], batch.mask[:, permutation], batch.cell)
    torch.testing.assert_close(plain, shuffled, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["max", "max+mean"])
def test_masked_pool_ignores_padding(example, pooling):
    model = _tiny_model(pooling=pooling)
    small = point_cloud(_structure(example, "NaCl"))
    alone = batch_to_tensors(collate_clouds([small]))
    padded = batch_to_tensors(collate_clouds([small, point_cloud(_structure(example, "SrTiO3"))]))
    padded.points[0, small.n_atoms:] = 1e3  # whatever padding holds must not reach the pool
    with torch.no_grad():
        torch.testing.assert_close(model.forward_batch(alone)[0], model.forward_batch(padded)[0],
                                   rtol=1e-5, atol=1e-6)
    features = torch.tensor([[[1.0], [5.0], [9.0]]])
    assert masked_max(features, torch.tensor([[True, True, False]])).item() == 5.0


def test_training_rotations_are_proper_and_random():
    from app.engine.training.train_pointnet import random_rotations

    rotations = random_rotations(64, np.random.default_rng(0))
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (64, 3, 3)),
                               atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-5)
    assert np.abs(rotations.mean(axis=0)).max() < 0.25  # spread over orientations, not near the identity


def test_predictor_gives_the_cgcnn_record_layout_and_rules(tiny_models, example):
    from app.engine.properties.pointnet_predictor import PointNetPredictor
    from app.engine.properties.predictor import PropertyPredictor

    predictor = PointNetPredictor(device="cpu")
    structures = [_structure(example, s) for s in ("NaCl", "Fe", "GaAs")]
    results = predictor.predict(structures + [_rotated(structures[0])])
    for prediction in results:
        assert set(prediction.values) == set(PROPERTY_KEYS)
        if prediction["band_gap"] == 0.0:  # the metallic rule of the CGCNN predictor
            assert prediction["refractive_index"] is None and prediction["dielectric_constant"] is None
        else:
            assert prediction["dielectric_constant"] == pytest.approx(prediction["refractive_index"] ** 2)
    for key in PROPERTY_KEYS:  # a rotated copy of NaCl predicts the same
        if results[0][key] is None:
            assert results[3][key] is None
        else:
            assert results[3][key] == pytest.approx(results[0][key], rel=1e-4, abs=1e-5)
    cgcnn = PropertyPredictor(device="cpu")
    expected_total = cgcnn.energy_per_atom(structures[0], results[0]["formation_energy_per_atom"])
    assert results[0]["energy_per_atom"] == pytest.approx(expected_total)
    assert predictor.model_name == "pointnet" and cgcnn.model_name == "cgcnn"


def test_cli_predict_with_either_model_gives_the_same_keys(tiny_models, example, capsys):
    records = {}
    for model in ("cgcnn", "pointnet"):
        assert main(["predict", str(example("NaCl")), str(example("SrTiO3")), "--model", model]) == 0
        records[model] = json.loads(capsys.readouterr().out)
    assert [list(r) for r in records["cgcnn"]] == [list(r) for r in records["pointnet"]]
    assert {r["model"] for r in records["pointnet"]} == {"pointnet"}
    assert {r["model"] for r in records["cgcnn"]} == {"cgcnn"}
    assert records["pointnet"][0]["formation_energy_per_atom"] != records["cgcnn"][0]["formation_energy_per_atom"]


def test_cli_predict_pointnet_reports_bad_files(tiny_models, example, tmp_path, capsys):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a 3\n")
    assert main(["predict", str(example("Si")), str(bad), "--model", "pointnet"]) == 1
    records = {r["source"].split("/")[-1]: r for r in json.loads(capsys.readouterr().out)}
    assert records["Si.cif"]["error"] is None and records["broken.cif"]["error"]
    assert records["broken.cif"]["model"] == "pointnet"


def test_unknown_predictor_name_is_a_clear_error(tiny_models):
    from app.engine.core.errors import ModelError
    from app.engine.properties.pointnet_predictor import predictor_for

    with pytest.raises(ModelError, match="Unknown predictor 'schnet'"):
        predictor_for("schnet")
    assert predictor_for("pointnet", device="cpu").model_name == "pointnet"


def test_training_writes_entry_and_card_and_resumes(tiny_models, example, tmp_path, monkeypatch):
    from app.engine.training import train_pointnet
    from app.engine.training.feature_cache import featurise_points as featurise
    from app.engine.training.datasets import LabelledCrystal

    monkeypatch.setenv("CRYSTAL_DESIGNER_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    records = []
    for k, stem in enumerate(["NaCl", "Si", "GaAs", "CsCl", "Fe", "SrTiO3", "TiO2_rutile", "Cu2MnAl"] * 6):
        labels = {t: float(rng.normal()) for t in TARGETS}
        labels["log10_dielectric_constant"] = float("nan")
        records.append(LabelledCrystal(f"test-{k}", "mp_eform_gap", example(stem).read_text(), "cif", labels))
    dataset = featurise(records, workers=1)
    monkeypatch.setattr(train_pointnet, "load_union", lambda: dataset)
    monkeypatch.setattr(train_pointnet, "ARCHITECTURE", {"input_widths": [8, 8], "output_widths": [8, 8],
                                                         "tnet_widths": [8, 8], "head_widths": [8],
                                                         "point_features": FULL_POINT_FEATURE_LENGTH})
    out = tmp_path / "out"
    out.mkdir()
    entry = train_pointnet.train(epochs=2, output_dir=out)
    assert entry["kind"] == "pointnet" and entry["epochs_completed"] == 2
    assert set(entry["metrics"]["validation_mae"]) == set(TARGETS)
    assert (out / "pointnet.md").read_text().startswith("# Model card: pointnet")
    manifest = json.loads((out / "manifest.json").read_text())["models"]["pointnet"]
    assert manifest["sha256"] == entry["sha256"] and manifest["split"]["validation_count"] > 0
    shipped = train_pointnet.ship_checkpoint(out)  # the best epoch of the run's checkpoint, as a deadline would
    assert shipped["epochs_completed"] == 2 and shipped["best_epoch"] == entry["best_epoch"]
    assert shipped["metrics"]["validation_mae"] == entry["metrics"]["validation_mae"]
    calls = []
    monkeypatch.setattr(train_pointnet, "_loss", lambda *a: calls.append(1))
    train_pointnet.train(epochs=2, output_dir=out)  # resumes after the last epoch: nothing to train
    assert calls == []


def test_widening_a_seed_model_to_the_environment_features_keeps_its_predictions(example):
    from app.engine.training.train_pointnet import with_point_features

    seed_model = _tiny_model()
    wider = with_point_features(seed_model, FULL_POINT_FEATURE_LENGTH).eval()
    assert wider.config.point_features == FULL_POINT_FEATURE_LENGTH
    batch = batch_to_tensors(collate_clouds([point_cloud(_structure(example, s)) for s in ("GaAs", "SrTiO3")]))
    with torch.no_grad():
        torch.testing.assert_close(wider.forward_batch(batch), seed_model.forward_batch(batch))
