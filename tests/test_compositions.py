"""DING compositions: formulas and features, predictor records, generator flags and counts, CLI."""

from __future__ import annotations

import csv
import gzip
import io
import json

import numpy as np
import pytest

from app.engine.compositions.formula import (BLOCK, ELEMENT_INDEX, FEATURE_LENGTH, FormulaError, counts_from_vector,
                                             count_vector, feature_vector, normalise_formula, parse_formula)
from app.engine.core.errors import CrystalDesignerError
from test_compositions_support import write_tiny_ding_models


@pytest.fixture
def ding_models(tiny_models):
    """The tiny models of every kind (CGCNN for the structure step) plus tiny DING models."""
    return write_tiny_ding_models(tiny_models)


def test_formulas_are_reduced_and_written_the_same_way():
    assert parse_formula("Fe2O2") == {"Fe": 1, "O": 1}
    assert parse_formula("La1Pb1Re2") == {"La": 1, "Pb": 1, "Re": 2}
    assert parse_formula("Fe0.5O0.5") == {"Fe": 1, "O": 1}
    assert normalise_formula("O3Al2") == normalise_formula("Al2O3") == "Al2O3"
    assert normalise_formula("Ca(OH)2") == normalise_formula("CaO2H2")


def test_feature_vector_is_one_hot_count_blocks():
    vector = feature_vector({"Al": 2, "O": 3})
    assert vector.shape == (FEATURE_LENGTH,)
    blocks = vector.reshape(-1, BLOCK)
    assert np.all(blocks.sum(axis=1) == 1)  # one hot per element
    assert blocks[ELEMENT_INDEX["Al"], 2] == 1 and blocks[ELEMENT_INDEX["O"], 3] == 1
    assert blocks[ELEMENT_INDEX["Fe"], 0] == 1
    assert counts_from_vector(count_vector({"Fe": 2, "O": 2})) == {"Fe": 1, "O": 1}


@pytest.mark.parametrize("text, wording", [
    ("", "not a chemical formula"), ("Xx2O", "not a chemical formula"), ("Al2O3;rm", "not a chemical formula"),
    ("Og2", "outside the"), ("Fe11O", "at most 10"), ("Fe0.3333O0.71", "non-whole"),
])
def test_bad_formulas_raise_a_clear_error(text, wording):
    with pytest.raises(FormulaError, match=wording) as caught:
        parse_formula(text)
    assert isinstance(caught.value, CrystalDesignerError)


def test_predictor_gives_records_and_error_records(ding_models):
    from app.engine.compositions.runtime import CompositionPredictor

    records = CompositionPredictor().predict(["Al2O3", "not a formula", "Og", "Fe2O2"])
    assert [r["formula"] for r in records] == ["Al2O3", None, None, "FeO"]
    assert records[1]["error"] and records[2]["error"] and "error" not in records[0]
    for record in (records[0], records[3]):
        assert all(isinstance(record[key], float) for key in ("formation_enthalpy", "energy_per_atom",
                                                              "volume_per_atom"))


def test_generated_compositions_are_flagged_and_counted(ding_models):
    from app.engine.compositions.runtime import CompositionGenerator

    result = CompositionGenerator().generate({"formation_enthalpy": -2.0}, n=20, seed=1)
    assert result.counts["samples"] == 20 and result.counts["decoded"] == 20
    assert [c.formula for c in result.candidates] == ["NaCl"] * 20  # the tiny decoder always says NaCl
    assert [c.unique for c in result.candidates] == [True] + [False] * 19
    assert result.counts["unique"] == 1 and result.counts["not_in_training"] == 0  # NaCl is known
    assert result.candidates[0].charge_balanced and not result.candidates[0].not_in_training
    assert result.counts["kept"] == 0


def test_new_unbalanced_compositions_are_flagged(tmp_path, monkeypatch):
    from app.engine.compositions.runtime import CompositionGenerator

    folder = write_tiny_ding_models(tmp_path / "m", decoded={"Na": 2, "Cl": 1})
    result = CompositionGenerator(folder=folder).generate({"volume_per_atom": 20.0}, n=3, seed=0)
    first = result.candidates[0]
    assert first.formula == "Na2Cl" and first.not_in_training and not first.charge_balanced
    assert result.counts == {"samples": 3, "decoded": 3, "unique": 1, "not_in_training": 1, "charge_balanced": 0,
                             "kept": 0}


def test_targets_are_checked_and_out_of_range_targets_warned(ding_models):
    from app.engine.compositions.runtime import CompositionGenerator, TargetError, parse_targets

    assert parse_targets(["formation_enthalpy=-2", "volume_per_atom=12.5"]) == {
        "formation_enthalpy": -2.0, "volume_per_atom": 12.5}
    for bad in (["band_gap=1"], ["formation_enthalpy"], ["formation_enthalpy=abc"], []):
        with pytest.raises(TargetError):
            parse_targets(bad)
    result = CompositionGenerator().generate({"formation_enthalpy": -5.0}, n=2)
    assert len(result.warnings) == 1 and "outside the range" in result.warnings[0]
    assert not CompositionGenerator().generate({"formation_enthalpy": -1.0}, n=2).warnings


def test_unset_targets_come_from_the_target_mixture_given_the_set_ones():
    from app.engine.compositions.runtime import KnownCompositions

    # Two well-separated components: deep formation enthalpies go with low energies and small volumes.
    known = KnownCompositions.from_formulas(
        ["NaCl"], weights=[0.5, 0.5], means=[[-3.0, -7.0, 9.0], [0.5, -4.0, 30.0]],
        covariances=[np.diag([0.1, 0.2, 1.0]), np.diag([0.1, 0.2, 1.0])], low=[-5, -15, 2], high=[5, 0, 100])
    rows = known.conditions({"formation_enthalpy": -2.9}, 400, np.random.default_rng(0))
    assert np.all(rows[:, 0] == -2.9)
    assert abs(np.median(rows[:, 1]) + 7.0) < 0.2 and abs(np.median(rows[:, 2]) - 9.0) < 0.5
    rows = known.conditions({"formation_enthalpy": 0.4, "volume_per_atom": 31.0}, 50, np.random.default_rng(1))
    assert np.all(rows[:, 2] == 31.0) and abs(np.median(rows[:, 1]) + 4.0) < 0.3
    rows = known.conditions({"volume_per_atom": 500.0}, 20, np.random.default_rng(2))
    assert np.all(rows[:, :2] >= [-5, -15]) and np.all(rows[:, :2] <= [5, 0])  # clipped to the training range


def test_known_compositions_keep_fingerprints_not_formulas(tmp_path):
    from app.engine.compositions.runtime import KNOWN_COMPOSITIONS_FILE, KNOWN_NAME, KnownCompositions
    from app.engine.core.registry import save_manifest_entry, sha256_of

    known = KnownCompositions.from_formulas(["NaCl", "Al2O3"], weights=[1.0], means=[[0, -5, 20]],
                                            covariances=[np.eye(3)], low=[-5, -15, 2], high=[5, 0, 100])
    path = tmp_path / KNOWN_COMPOSITIONS_FILE
    known.save(path)
    with np.load(path, allow_pickle=False) as saved:
        assert saved["formula_hashes"].dtype == np.uint64 and len(saved["formula_hashes"]) == 2
        assert [key for key in saved.files if saved[key].dtype.kind in "US"] == ["properties"]  # no formulas
    save_manifest_entry(KNOWN_NAME, {"file": path.name, "sha256": sha256_of(path)}, tmp_path)
    loaded = KnownCompositions.load(tmp_path)
    assert "NaCl" in loaded and "Al2O3" in loaded and "FeO" not in loaded and len(loaded) == 2


def test_generation_is_reproducible_and_cancellable(ding_models):
    from app.engine.compositions.runtime import CompositionGenerator
    from app.engine.core.cancel import CancelToken
    from app.engine.core.errors import CancelledError

    generator = CompositionGenerator()
    calls = []
    generator.generate({"formation_enthalpy": -1.0}, n=600, seed=3, progress=lambda d, t, m="": calls.append(d))
    assert calls[-1] == 600 and len(calls) == 3
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        generator.generate({"formation_enthalpy": -1.0}, n=10, cancel=token)


def test_structures_from_the_prototype_scaled_to_the_volume(ding_models):
    from app.engine.compositions.structures import PrototypeLibrary

    library = PrototypeLibrary.load()
    proposed = library.propose("KBr", volume_per_atom=30.0)
    assert len(proposed) == 1
    structure = proposed[0].structure
    assert structure.composition.reduced_formula == "KBr"
    assert structure.volume / len(structure) == pytest.approx(30.0)
    with pytest.raises(CrystalDesignerError, match="anonymous formula"):
        library.propose("Al2O3")


def _run_cli(capsys, *argv):
    from app.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_predict_json_and_csv_with_error_records(ding_models, capsys, tmp_path):
    code, out, _ = _run_cli(capsys, "compositions", "predict", "Al2O3", "Zz9")
    records = json.loads(out)
    assert code == 1 and records[0]["formula"] == "Al2O3" and records[1]["error"]
    assert set(records[0]) >= {"formula_input", "formula", "formation_enthalpy", "energy_per_atom", "volume_per_atom"}
    table = tmp_path / "formulas.csv"
    table.write_text("formula,comment\nNaCl,salt\nFeO,\n")
    code, out, _ = _run_cli(capsys, "compositions", "predict", "--file", str(table), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["formula"] for r in rows] == ["NaCl", "FeO"]


def test_cli_generate_and_structures(ding_models, capsys, tmp_path):
    code, out, err = _run_cli(capsys, "compositions", "generate", "--target", "formation_enthalpy=-2.0",
                              "--n", "5", "--seed", "2")
    payload = json.loads(out)
    assert code == 0 and payload["counts"]["samples"] == 5 and len(payload["candidates"]) == 1
    assert set(payload["candidates"][0]) >= {"formula", "formation_enthalpy", "charge_balanced", "not_in_training",
                                             "unique"}
    code, _, err = _run_cli(capsys, "compositions", "generate", "--target", "band_gap=1", "--n", "5")
    assert code == 2 and "PROPERTY=VALUE" in err
    code, out, _ = _run_cli(capsys, "compositions", "structures", "KCl", "--out", str(tmp_path / "cifs"),
                            "--device", "cpu")
    rows = json.loads(out)
    assert code == 0 and rows[0]["formula"] == "KCl" and rows[0]["formation_energy_per_atom"] is not None
    assert rows[0]["cif"] and len(list((tmp_path / "cifs").glob("*.cif"))) == 1


def test_kl_weight_rises_linearly_over_the_warm_up():
    from app.engine.training import train_ding

    steps = 100
    assert train_ding.kl_weight_after(0, steps) == 0.0
    half = train_ding.kl_weight_after(train_ding.KL_WARMUP_EPOCHS * steps // 2, steps)
    assert half == pytest.approx(train_ding.KL_WEIGHT / 2)
    assert train_ding.kl_weight_after(10 ** 6, steps) == train_ding.KL_WEIGHT


def test_data_join_normalises_formulas_and_keeps_the_lowest_enthalpy(tmp_path, monkeypatch):
    from app.engine.training.ding_data import load_composition_data

    monkeypatch.setenv("CRYSTAL_DESIGNER_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "oqmd"
    folder.mkdir()
    tables = {"formation_enthalpy": [("Na1Cl1", -2.0), ("Fe2O2", -1.3), ("Al2O3", -3.4), ("Og1", 0.1)],
              "energy_per_atom": [("ClNa", -3.5), ("Fe1O1", -7.0), ("Al2O3", -7.5)],
              "volume_per_atom": [("NaCl", 23.0), ("FeO", 10.0), ("Al2O3", 40.0e3)]}
    for name, rows in tables.items():
        with gzip.open(folder / f"{name}.csv.gz", "wt") as handle:
            handle.write("formula,target\n" + "".join(f"{f},{v}\n" for f, v in rows))
    with gzip.open(folder / "ding_three_targets.csv.gz", "wt") as handle:
        handle.write("comp,energy_pa,volume_pa,magmom_pa,bandgap,delta_e,stability\n"
                     "Na1Cl1,-3.6,22.0,None,5.0,-2.2,0.0\nK1Br1,-3.2,35.0,None,4.0,-1.9,0.0\n")
    data = load_composition_data(folder)
    assert list(data.formulas) == ["FeO", "KBr", "NaCl"]  # Al2O3 dropped: implausible volume
    assert data.targets[list(data.formulas).index("NaCl")].tolist() == pytest.approx([-2.2, -3.6, 22.0])
    assert data.report["implausible_labels_dropped"] == 1


def test_training_writes_entries_and_cards_and_resumes(tmp_path, monkeypatch):
    from app.engine.compositions.runtime import CompositionGenerator, CompositionPredictor
    from app.engine.core.registry import load_manifest
    from app.engine.training import train_ding
    from app.engine.training.ding_data import CompositionData

    monkeypatch.setenv("CRYSTAL_DESIGNER_CACHE", str(tmp_path / "cache"))
    formulas = ["NaCl", "KBr", "FeO", "Al2O3", "MgO", "CaF2"]
    from app.engine.compositions.formula import count_vector

    data = CompositionData(np.array(formulas), np.stack([count_vector(parse_formula(f)) for f in formulas]),
                           np.array([[-2.1, -3.5, 23], [-1.9, -3.2, 35], [-1.4, -7.0, 10], [-3.4, -7.5, 8.5],
                                     [-3.0, -6.0, 9.5], [-4.0, -5.0, 13]], dtype=np.float32),
                           np.array([False, False, False, False, True, True]), {"formation_enthalpy_rows": 6,
                           "joined_three_files": 6, "compositions_joined": 6, "formation_enthalpy_unusable_formulas": 0,
                           "implausible_labels_dropped": 0, "compositions_used": 6})
    out = tmp_path / "models"
    out.mkdir()
    train_ding.write_known_compositions(data, out)
    for prop in ("formation_enthalpy", "energy_per_atom", "volume_per_atom"):
        entry = train_ding.train_predictor(prop, data, epochs=1, output_dir=out)
        assert entry["metrics"]["validation_count"] == 2 and entry["epochs_completed"] == 1
    entry = train_ding.train_cvae(data, epochs=1, output_dir=out)
    manifest = load_manifest(out)
    assert {"ding_formation_enthalpy", "ding_cvae", "ding_known_compositions"} <= set(manifest)
    assert (out / "ding_cvae.md").read_text().startswith("# Model card: ding_cvae")
    assert "0 of 1" not in (out / "ding_formation_enthalpy.md").read_text()
    again = train_ding.train_cvae(data, epochs=1, output_dir=out)  # resumes: no epoch left to train
    assert again["history"] == entry["history"]
    second = train_ding.train_predictor("volume_per_atom", data, epochs=1, output_dir=out, continue_shipped=True)
    assert [stage["epochs"] for stage in second["training"]["stages"]] == [1, 1]
    assert "Training stages" in (out / "ding_volume_per_atom.md").read_text()
    generator = CompositionGenerator(folder=out, predictor=CompositionPredictor(folder=out))
    assert generator.generate({"formation_enthalpy": -2.0}, n=4).counts["samples"] == 4


def test_charge_balance_of_many_element_compositions_is_not_guessed():
    from app.engine.core.oxidation import MAX_ELEMENTS_FOR_GUESS, charge_balanced

    assert charge_balanced("NaCl") and not charge_balanced("NaCl2")
    # A decoder of random weights proposes compositions of ten or more elements; pymatgen's
    # exhaustive guess over them would take minutes, so they count as not balanced.
    many = "LiNaKRbCsMgCaSrBaOFClBr"
    assert not charge_balanced(many)
    assert MAX_ELEMENTS_FOR_GUESS < 13


def _tiny_composition_data():
    from app.engine.compositions.formula import count_vector
    from app.engine.training.ding_data import CompositionData

    formulas = ["NaCl", "KBr", "FeO", "Al2O3", "MgO", "CaF2", "NaBr", "KCl"]
    counts = np.stack([count_vector(parse_formula(f)) for f in formulas])
    targets = np.array([[-2.1, -3.5, 23], [-1.9, -3.2, 35], [-1.4, -7.0, 10], [-3.4, -7.5, 8.5],
                        [-3.0, -6.0, 9.5], [-4.0, -5.0, 13], [-1.8, -3.1, 27], [-2.2, -3.6, 31]], dtype=np.float32)
    report = {"formation_enthalpy_rows": 8, "joined_three_files": 8, "compositions_joined": 8,
              "formation_enthalpy_unusable_formulas": 0, "implausible_labels_dropped": 0, "compositions_used": 8}
    return CompositionData(np.array(formulas), counts, targets, np.array([False] * 6 + [True] * 2), report)


def test_elemental_coefficients_are_a_least_squares_fit_of_the_fractions():
    from app.engine.compositions.formula import ELEMENT_INDEX, count_vector
    from app.engine.training.train_ding import fit_elemental_coefficients

    per_element = {"Na": -1.0, "Cl": -2.0, "K": -0.5, "Br": -1.5, "O": -4.0, "Fe": -6.0}
    formulas = ["NaCl", "Na2Cl", "KBr", "K3Br", "FeO", "Fe2O3", "NaBr", "KCl"]
    counts = np.stack([count_vector(parse_formula(f)) for f in formulas])
    fractions = counts / counts.sum(1, keepdims=True)
    values = fractions @ np.array([per_element.get(e, 0.0) for e in ELEMENT_INDEX])
    coefficients = fit_elemental_coefficients(counts, values)
    for element, value in per_element.items():
        assert coefficients[ELEMENT_INDEX[element]] == pytest.approx(value, abs=1e-4)
    assert coefficients[ELEMENT_INDEX["U"]] == 0.0  # absent from the data: the minimum-norm solution


def test_residual_predictor_is_its_elemental_part_plus_the_network():
    import torch

    from app.engine.compositions.formula import count_vector
    from app.engine.compositions.networks import CompositionResidualDNN

    torch.manual_seed(0)
    model = CompositionResidualDNN(hidden=(8, 8)).eval()
    with torch.no_grad():
        model.elemental_coefficients.uniform_(-3, 0)
        model.element_properties.normal_()
    counts = torch.from_numpy(np.stack([count_vector(parse_formula(f)) for f in ("NaCl", "Na2Cl2", "Fe2O3")]))
    features = model.raw_features(counts)
    assert features.shape == (3, model.feature_mean.shape[0])
    torch.testing.assert_close(features[0], features[1])  # a formula unit's multiple is the same composition
    with torch.no_grad():
        total = model.predict_counts(counts)
        expected = model(counts) * model.target_std + model.target_mean + model.fractions(counts) @ \
            model.elemental_coefficients
    torch.testing.assert_close(total, expected)


def test_an_ensemble_predicts_the_mean_of_its_members_and_one_member_keeps_the_old_weight_keys():
    import torch

    from app.engine.compositions.formula import count_vector
    from app.engine.compositions.networks import CompositionResidualDNN

    torch.manual_seed(0)
    single = CompositionResidualDNN(hidden=(8, 8))
    assert single.members == 1 and not any(key.startswith("extra_nets") for key in single.state_dict())
    ensemble = CompositionResidualDNN(hidden=(8, 8), members=3).eval()
    counts = torch.from_numpy(np.stack([count_vector(parse_formula(f)) for f in ("NaCl", "Fe2O3", "SrTiO3")]))
    with torch.no_grad():
        outputs = ensemble.member_outputs(counts)
        assert outputs.shape == (3, 3)
        assert not torch.allclose(outputs[0], outputs[1])  # different initial weights
        torch.testing.assert_close(ensemble(counts), outputs.mean(dim=0))
    with pytest.raises(ValueError):
        CompositionResidualDNN(hidden=(8,), members=0)


@pytest.mark.parametrize("members", [1, 2])
def test_residual_training_writes_entries_and_derives_the_energy(tmp_path, monkeypatch, members):
    import torch

    from app.engine.compositions.runtime import CompositionPredictor
    from app.engine.core.registry import load_manifest
    from app.engine.training import train_ding

    monkeypatch.setenv("CRYSTAL_DESIGNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(train_ding, "RESIDUAL_HIDDEN", (8, 8))
    monkeypatch.setattr(train_ding, "RESIDUAL_MEMBERS", {"formation_enthalpy": members, "volume_per_atom": 1})
    data = _tiny_composition_data()
    out = tmp_path / "models"
    out.mkdir()
    train_ding.write_known_compositions(data, out)
    metrics = train_ding.train_residual_predictors(epochs=2, output_dir=out, data=data)
    assert set(metrics) == {"ding_formation_enthalpy", "ding_volume_per_atom", "ding_energy_per_atom"}
    manifest = load_manifest(out)
    enthalpy, energy = manifest["ding_formation_enthalpy"], manifest["ding_energy_per_atom"]
    assert enthalpy["kind"] == energy["kind"] == "ding_residual" and enthalpy["epochs_completed"] == 2
    assert energy["derived_from"]["sha256"] == enthalpy["sha256"]
    assert "held out of the fit" in enthalpy["training"]["early_stopping"]
    assert (out / "ding_volume_per_atom.md").read_text().startswith("# Model card: ding_volume_per_atom")
    assert enthalpy["architecture"]["members"] == energy["architecture"]["members"] == members
    predictor = CompositionPredictor(folder=out)  # loads every state dict strictly
    assert predictor.models["energy_per_atom"].members == members
    records = predictor.predict(["NaCl", "Fe2O3", "Cu"])
    assert all(isinstance(r["energy_per_atom"], float) for r in records)
    # A pure element: formation enthalpy 0 by definition, energy per atom its fitted reference energy.
    assert records[2]["formation_enthalpy"] == 0.0
    assert records[2]["energy_per_atom"] == pytest.approx(
        float(predictor.models["energy_per_atom"].element_values[ELEMENT_INDEX["Cu"]]))
    # The energy model is the enthalpy network with another elemental part: their difference is linear.
    counts = torch.from_numpy(data.counts)
    with torch.no_grad():
        difference = predictor.models["energy_per_atom"].predict_counts(counts) - \
            predictor.models["formation_enthalpy"].predict_counts(counts)
        linear = predictor.models["energy_per_atom"].linear_part(counts) - \
            predictor.models["formation_enthalpy"].linear_part(counts)
    torch.testing.assert_close(difference, linear, rtol=1e-4, atol=1e-4)
    again = train_ding.train_residual_predictor("volume_per_atom", data, epochs=2, output_dir=out)
    assert again["history"] == manifest["ding_volume_per_atom"]["history"]  # resumed: nothing left to train


def test_count_draws_follow_temperature_and_nucleus(ding_models):
    from app.engine.compositions.runtime import CompositionGenerator, TargetError

    plain = CompositionGenerator()
    conditions = plain.known.conditions({"formation_enthalpy": -2.0}, 16, np.random.default_rng(0))
    argmax = plain.sample_counts(conditions, seed=3)
    narrow = CompositionGenerator(temperature=1.0, top_p=1e-6)  # a nucleus of one count: the most likely one
    np.testing.assert_array_equal(narrow.sample_counts(conditions, seed=3), argmax)
    hot = CompositionGenerator(temperature=50.0, latent_scale=0.5)
    first, second = hot.sample_counts(conditions, seed=3), hot.sample_counts(conditions, seed=3)
    np.testing.assert_array_equal(first, second)  # the same seed draws the same counts
    assert not np.array_equal(first, argmax)  # a flat softmax draws other counts than the most likely
    for options in ({"temperature": -1.0}, {"latent_scale": 0.0}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(TargetError):
            CompositionGenerator(**options)
