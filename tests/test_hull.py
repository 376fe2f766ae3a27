"""The reference convex hull: E_hull, decomposition, compact file, prediction records."""

import json

import numpy as np
import pytest

from app.cli import main
from app.engine.core.errors import ModelError
from app.engine.stability.hull import ReferenceHull, add_hull_fields
from app.engine.training.hull_builder import hull_from_rows, prune_to_hull

ROWS = [("mp-1", "SrO", -3.0), ("mp-2", "TiO2", -3.4), ("mp-3", "SrTiO3", -3.5),
        ("mp-4", "Sr2TiO4", -3.1),  # above SrO + SrTiO3: 2/7 * -3.0 + 5/7 * -3.5 = -3.357
        ("mp-5", "TiO2", -3.3)]  # a higher polymorph of a formula already there


@pytest.fixture
def tiny_hull():
    return hull_from_rows(ROWS, ["O", "Sr", "Ti"])


def test_known_stable_compound_is_on_the_hull(tiny_hull):
    result = tiny_hull.e_above_hull("SrTiO3", -3.5)
    assert result.error is None
    assert result.e_above_hull == pytest.approx(0.0, abs=1e-9)
    assert result.decomposition == "SrTiO3"


def test_made_up_unstable_compound_lies_above_with_its_decomposition(tiny_hull):
    hull = tiny_hull.without(["mp-3"])
    result = hull.e_above_hull("SrTiO3", -3.0)
    # SrTiO3 = SrO (2 of 5 atoms) + TiO2 (3 of 5): hull energy 0.4 * -3.0 + 0.6 * -3.4 = -3.24
    assert result.e_above_hull == pytest.approx(0.24, abs=1e-6)
    assert result.decomposition == "TiO2 + SrO"
    assert tiny_hull.e_above_hull("Sr2TiO4", -3.1).e_above_hull == pytest.approx(-3.1 + 3.3571429, abs=1e-5)  # fractions keyed to 6 decimals


def test_energy_below_the_hull_is_negative_and_structures_are_accepted(tiny_hull):
    from pymatgen.core import Lattice, Structure

    structure = Structure(Lattice.cubic(3.9), ["Sr", "Ti", "O", "O", "O"],
                          [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
    assert tiny_hull.e_above_hull(structure, -3.6).e_above_hull == pytest.approx(-0.1)


def test_element_without_reference_gives_a_reason(tiny_hull):
    result = tiny_hull.e_above_hull("BaTiO3", -3.5)
    assert result.e_above_hull is None and "Ba" in result.error
    assert tiny_hull.e_above_hull("SrO", None).error


def test_pruning_keeps_hull_phases_and_file_round_trips(tiny_hull, tmp_path):
    pruned = prune_to_hull(tiny_hull)
    assert sorted(pruned.formulas) == ["O", "Sr", "SrO", "SrTiO3", "Ti", "TiO2"]
    assert pruned.energies[pruned.formulas.index("TiO2")] == pytest.approx(-3.4)
    pruned.save(tmp_path / "reference_hull.npz")
    loaded = ReferenceHull.load(tmp_path)
    assert loaded.formulas == pruned.formulas
    np.testing.assert_allclose(loaded.fractions, pruned.fractions)
    assert loaded.e_above_hull("Sr2TiO4", -3.0).e_above_hull == pytest.approx(0.3571429, abs=1e-5)


def test_missing_hull_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="build-index"):
        ReferenceHull.load(tmp_path)


def test_records_gain_hull_fields(tiny_hull):
    records = [{"formula": "SrTiO3", "formation_energy_per_atom": -3.4},
               {"formula": "NaCl", "formation_energy_per_atom": -2.0},
               {"formula": None, "formation_energy_per_atom": None}]
    add_hull_fields(records, tiny_hull)
    assert records[0]["e_above_hull"] == pytest.approx(0.1) and records[0]["decomposition"] == "SrTiO3"
    assert records[1]["e_above_hull"] is None and "Na" in records[1]["hull_error"]
    assert records[2]["hull_error"]
    add_hull_fields(records, None, "no hull here")
    assert all(r["hull_error"] == "no hull here" for r in records)


def test_predict_records_carry_e_above_hull(tiny_models, example, capsys):
    prune_to_hull(hull_from_rows(ROWS, ["O", "Sr", "Ti"])).save(tiny_models / "reference_hull.npz")
    assert main(["predict", str(example("SrTiO3")), str(example("NaCl")), "--device", "cpu"]) == 0
    srtio3, nacl = json.loads(capsys.readouterr().out)
    assert isinstance(srtio3["e_above_hull"], float) and srtio3["decomposition"]
    assert nacl["e_above_hull"] is None and "Na" in nacl["hull_error"]


def test_predict_without_hull_says_why(tiny_models, example, capsys):
    assert main(["predict", str(example("NaCl")), "--device", "cpu"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["e_above_hull"] is None and "reference_hull" in record["hull_error"]


@pytest.mark.integration
def test_shipped_hull_places_known_phases():
    hull = ReferenceHull.load()
    assert hull.e_above_hull("SrTiO3", hull.energies[hull.formulas.index("SrTiO3")]).e_above_hull == pytest.approx(0)
    own = hull.ids[hull.formulas.index("SrTiO3")]
    assert hull.e_above_hull("SrTiO3", -3.0).decomposition == "SrTiO3"
    result = hull.without([own]).e_above_hull("SrTiO3", -3.0)
    assert result.e_above_hull > 0.3 and "+" in result.decomposition


def test_evaluation_figures_go_to_the_hull_entry_and_card_only(tmp_path):
    from app.engine.core.registry import load_manifest, save_manifest_entry
    from app.engine.training.hull_builder import record_evaluation

    save_manifest_entry("reference_hull", {"file": "reference_hull.npz", "metrics": {"load_seconds": 0.2},
                                           "data": {"rows": 5, "distinct_formulas": 4, "hull_phases": 3}}, tmp_path)
    save_manifest_entry("other", {"file": "other.pt", "metrics": {"mae": 1.0}}, tmp_path)
    report = {"held_out": 10, "max_sites": 24, "relaxed_count": 9, "best_by_mae": "chgnet/relaxed", "seconds": 5.0,
              "cpu_seconds": 4.0, "load_average_1min_at_end": 1.5,
              "relaxed_subset_all_inputs": {"chgnet/relaxed": {"count": 9, "mae_eV_per_atom": 0.05, "f1_stable": 0.8},
                                            "cgcnn/relaxed": {"count": 9, "mae_eV_per_atom": 0.09, "f1_stable": 0.6}}}
    record_evaluation(report, tmp_path)
    manifest = load_manifest(tmp_path)
    stored = manifest["reference_hull"]["metrics"]["evaluate_hull"]
    assert stored["best_by_mae"] == "chgnet/relaxed" and stored["routes"]["cgcnn/relaxed"]["f1_stable"] == 0.6
    assert manifest["reference_hull"]["metrics"]["load_seconds"] == 0.2 and manifest["other"]["metrics"] == {"mae": 1.0}
    card = (tmp_path / "reference_hull.md").read_text()
    assert "| chgnet/relaxed | 9 | 0.05 | 0.8 |" in card and "evaluate hull" in card


def test_scores_mae_and_f1_of_stable():
    from app.engine.training.evaluate_hull import _scores

    truth = np.array([-0.1, 0.0, 0.2, 0.3, np.nan])
    predicted = np.array([-0.05, 0.1, 0.25, -0.1, 0.0])
    scores = _scores(truth, predicted)
    # stable: first two; called stable: first and fourth -> precision 1/2, recall 1/2
    assert scores["count"] == 4 and scores["f1_stable"] == 0.5
    assert scores["mae_eV_per_atom"] == pytest.approx((0.05 + 0.1 + 0.05 + 0.4) / 4, abs=1e-4)


def test_relaxed_records_place_the_weighted_mean_of_chgnet_and_predicted_formation_energies_unless_asked_otherwise(
        tiny_hull):
    from app.engine.generation.settings import GenerationSettings
    from app.engine.core.errors import CrystalDesignerError
    from app.engine.stability.formation import CHGNET_HULL_WEIGHT as w, hull_formation

    assert 0 < w < 1  # two independent estimates, neither ignored

    assert hull_formation(-3.0, -3.4, "chgnet") == (-3.4, "chgnet")
    assert hull_formation(-3.0, -3.4, "predicted") == (-3.0, "predicted")
    assert hull_formation(-3.0, -3.4, "mean") == (pytest.approx(-3.4 * w - 3.0 * (1 - w)), "mean")
    assert hull_formation(-3.0, None) == (-3.0, "predicted") and hull_formation(None, None) == (None, None)
    plain = {"formula": "SrTiO3", "formation_energy_per_atom": -3.4}
    relaxed = {"formula": "SrTiO3", "formation_energy_per_atom": -3.4,
               "relaxation": {"formation_energy_per_atom": -3.5}}
    add_hull_fields([plain, relaxed], tiny_hull)
    assert plain["e_above_hull"] == pytest.approx(0.1) and plain["hull_energy"] == "predicted"
    # the default: w · (-3.5) + (1 - w) · (-3.4) against a hull at -3.5
    assert relaxed["e_above_hull"] == pytest.approx(0.1 * (1 - w)) and relaxed["hull_energy"] == "mean"
    add_hull_fields([relaxed], tiny_hull, source="predicted")
    assert relaxed["e_above_hull"] == pytest.approx(0.1)
    add_hull_fields([relaxed], tiny_hull, source="chgnet")
    assert relaxed["e_above_hull"] == pytest.approx(0.0, abs=1e-9) and relaxed["hull_energy"] == "chgnet"
    with pytest.raises(CrystalDesignerError, match="hull energy"):
        GenerationSettings(hull_energy="dft")
