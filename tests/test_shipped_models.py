"""Integration: the shipped weights load, match their manifest and give physically sensible answers."""

import json
import subprocess
import sys

import pytest

from app.engine.core.paths import models_dir
from app.engine.properties.predictor import PROPERTY_MODELS, PropertyPredictor
from app.engine.core.registry import load_manifest, verified_weights_path

pytestmark = pytest.mark.integration

REQUIRED_ENTRY_FIELDS = {"file", "sha256", "architecture", "units", "data", "split", "epochs", "metrics", "card"}
#: Derived look-up files (indexes, hulls, prototypes) are not trained: no epochs or metrics.
REQUIRED_DATA_FIELDS = {"file", "sha256", "kind", "description", "data", "split", "card"}


@pytest.fixture(scope="module")
def predictor():
    return PropertyPredictor.from_models(device="cpu")


def test_every_shipped_model_is_described_and_verified():
    manifest = load_manifest()
    assert set(PROPERTY_MODELS) <= set(manifest)
    for name, entry in manifest.items():
        verified_weights_path(name)
        assert (models_dir() / entry["card"]).exists(), name
        if entry["file"].endswith(".pt"):
            assert REQUIRED_ENTRY_FIELDS <= set(entry), name
            assert entry["split"]["validation_count"] > 0 and entry["metrics"], name
        else:
            assert REQUIRED_DATA_FIELDS <= set(entry), name
    shipped = {p.name for p in models_dir().iterdir() if p.suffix in (".pt", ".npz") or p.name.endswith(".gz")}
    described = {entry["file"] for entry in manifest.values()}
    assert shipped - described <= {"training_index.json.gz"}, "every shipped model file has a manifest entry"


def test_srtio3_is_a_stable_insulator(predictor, example):
    from app.engine.io.crystal_io import read_crystal_file

    [loaded] = read_crystal_file(example("SrTiO3"))
    [result] = predictor.predict([loaded.structure])
    assert result["formation_energy_per_atom"] < -2.5  # DFT: about -3.5 eV/atom
    assert result["band_gap"] > 1.0  # PBE: about 1.8 eV
    assert 100 < result["bulk_modulus"] < 300  # about 170-180 GPa
    assert 1.8 < result["refractive_index"] < 3.0


def test_iron_is_a_stiff_metal(predictor, example):
    from app.engine.io.crystal_io import read_crystal_file

    [loaded] = read_crystal_file(example("Fe"))
    [result] = predictor.predict([loaded.structure])
    assert abs(result["formation_energy_per_atom"]) < 0.2  # an element: ~0 by definition
    assert result["band_gap"] == 0.0
    assert result["refractive_index"] is None and result["dielectric_constant"] is None
    assert result["bulk_modulus"] > 100


def test_cli_predicts_the_examples_and_flags_a_bad_file(tmp_path, example):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_broken\n_cell_length_a 3.9\nloop_\n_atom_site_label\n")
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "predict", str(example("NaCl")), str(example("Si")), str(bad)],
        capture_output=True, text=True,
    )
    assert out.returncode == 1, out.stderr
    records = json.loads(out.stdout)
    by_name = {r["source"].split("/")[-1]: r for r in records}
    assert by_name["NaCl.cif"]["band_gap"] > 2.0 and by_name["NaCl.cif"]["error"] is None
    assert by_name["Si.cif"]["formula"] == "Si"
    assert by_name["broken.cif"]["error"] and by_name["broken.cif"]["band_gap"] is None
