"""Integration: the shipped PointNet loads, is described, and gives physically sensible answers."""

import json

import pytest
from pymatgen.core import Lattice, Structure

from app.cli import main
from app.engine.core.paths import models_dir
from app.engine.core.registry import load_manifest, verified_weights_path
from app.engine.io.crystal_io import read_crystal_file

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def predictor():
    from app.engine.properties.pointnet_predictor import PointNetPredictor

    return PointNetPredictor(device="cpu")


def test_shipped_pointnet_is_described_and_verified():
    entry = load_manifest()["pointnet"]
    verified_weights_path("pointnet")
    assert entry["kind"] == "pointnet" and (models_dir() / entry["card"]).exists()
    assert set(entry["metrics"]["validation_mae"]) == set(entry["units"])
    assert entry["split"]["validation_count"] > 1000


def test_insulators_metals_and_energies_make_sense(predictor, example):
    structures = {s: read_crystal_file(example(s))[0].structure for s in ("NaCl", "SrTiO3", "Fe", "Cu2MnAl")}
    results = dict(zip(structures, predictor.predict(list(structures.values()))))
    assert -2.6 < results["NaCl"]["formation_energy_per_atom"] < -1.6  # DFT: about -2.1 eV/atom
    assert results["SrTiO3"]["formation_energy_per_atom"] < -2.5  # DFT: about -3.5 eV/atom
    assert results["NaCl"]["band_gap"] > 2.0 and results["SrTiO3"]["band_gap"] > 1.0
    assert results["Fe"]["band_gap"] == 0.0 and results["Fe"]["refractive_index"] is None
    assert 100 < results["Fe"]["bulk_modulus"] < 300  # about 170-190 GPa


def test_another_cell_setting_or_origin_barely_changes_the_prediction(predictor, example):
    # Rotations are exact (the canonical orientation, tests/test_pointnet.py); another choice of
    # lattice vectors or origin gives another cloud of the same crystal, which the model learnt to
    # treat (almost) alike.
    structure = read_crystal_file(example("TiO2_rutile"))[0].structure
    relabelled = Structure(Lattice(structure.lattice.matrix[[1, 2, 0]]), structure.species[::-1],
                           structure.frac_coords[::-1][:, [1, 2, 0]])
    shifted = structure.copy()
    shifted.translate_sites(range(len(shifted)), [0.13, 0.27, 0.41])
    plain, *others = predictor.predict([structure, relabelled, shifted])
    for other in others:
        assert other["formation_energy_per_atom"] == pytest.approx(plain["formation_energy_per_atom"], abs=0.01)
        assert other["band_gap"] == pytest.approx(plain["band_gap"], abs=0.02)
        assert other["bulk_modulus"] == pytest.approx(plain["bulk_modulus"], rel=0.02)


def test_cli_predicts_with_the_shipped_pointnet(example, capsys):
    assert main(["predict", str(example("GaAs")), "--model", "pointnet"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["model"] == "pointnet" and record["error"] is None and record["formula"] == "GaAs"
