"""Disordered structures are predicted through an ordered approximant (or a virtual crystal)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from app.engine.core.errors import StructureReadError
from app.engine.properties.disorder import (commensurate_multiplier, disorder_summary, predict_approximant,
                                            predict_disordered, predict_virtual_crystal, random_orderings,
                                            virtual_crystal_features)

PILE = Path(__file__).parent / "data" / "real_world"


@pytest.fixture
def predictor(tiny_models):
    from app.engine.properties.predictor import PropertyPredictor

    return PropertyPredictor(device="cpu", folder=tiny_models)


def mixed_rock_salt(x_na: float = 0.75) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), [{"Na": x_na, "K": 1 - x_na}, "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_orderings_keep_the_composition_and_differ():
    structure = mixed_rock_salt(0.75)
    orderings, factors, error = random_orderings(structure, n_orderings=6)
    assert factors == (1, 1, 1) and error == 0  # 4 cation sites: 3 Na + 1 K
    assert len(orderings) == 4  # only 4 distinct placements of the one K exist
    for ordered in orderings:
        assert ordered.is_ordered and ordered.composition.reduced_formula == "KNa3Cl4"
    assert len({tuple(o.species) for o in orderings}) == len(orderings)


def test_supercell_grows_until_occupancies_are_whole_sites():
    structure = Structure(Lattice.cubic(3.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    assert commensurate_multiplier(structure) == (2, 0.0)
    third = Structure(Lattice.cubic(3.0), [{"Fe": 1 / 3, "Ni": 2 / 3}], [[0, 0, 0]])
    multiplier, error = commensurate_multiplier(third)
    assert multiplier == 3 and error < 1e-4


def test_vacancies_remove_sites():
    structure = Structure(Lattice.cubic(4.3), [{"Fe": 0.75}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    orderings, factors, _ = random_orderings(structure, n_orderings=3)
    assert np.prod(factors) == 4
    assert all(o.composition["Fe"] == 3 and o.composition["O"] == 4 for o in orderings)
    assert "vacancies 0.25" in disorder_summary(structure)


def test_occupancies_no_small_supercell_fits_are_refused():
    structure = Structure(Lattice.cubic(3.0), [{"Fe": 0.137, "Ni": 0.863}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(StructureReadError, match="cannot be approximated"):
        random_orderings(structure, max_sites=8)


def test_approximant_reports_the_lowest_energy_ordering(predictor):
    result = predict_approximant(predictor, mixed_rock_salt(0.5))
    energies = [o.formation_energy for o in result.orderings]
    assert energies == sorted(energies) and result.values == result.orderings[0].values
    assert "ordered approximant" in result.note and "Na0.5" in result.note


def test_virtual_crystal_weights_the_element_features(predictor):
    from app.engine.core.elements import element_feature_table

    structure = mixed_rock_salt(0.25)
    features = virtual_crystal_features(structure)
    table = element_feature_table()
    na_site = next(i for i, s in enumerate(structure) if not s.is_ordered)
    np.testing.assert_allclose(features[na_site], 0.25 * table[11] + 0.75 * table[19], rtol=1e-6)
    result = predict_virtual_crystal(predictor, structure)
    assert result.method == "virtual_crystal" and result.values["formation_energy_per_atom"] is not None


def test_virtual_crystal_of_an_ordered_structure_equals_the_ordinary_prediction(predictor):
    structure = mixed_rock_salt(1.0)
    ordinary = predictor.predict([structure])[0].values["formation_energy_per_atom"]
    assert predict_virtual_crystal(predictor, structure).values["formation_energy_per_atom"] == pytest.approx(
        ordinary, abs=1e-4)


def test_unfittable_occupancies_fall_back_to_the_virtual_crystal(predictor, monkeypatch):
    from app.engine.properties import disorder

    def refuse(*args, **kwargs):
        raise StructureReadError("too fine")

    monkeypatch.setattr(disorder, "random_orderings", refuse)
    structure = mixed_rock_salt(0.5)
    result = predict_disordered(predictor, structure)
    assert result.method == "virtual_crystal" and "No ordered approximant: too fine" in result.note


def test_predict_answers_every_file_of_the_pile(tiny_models):
    from app.engine.properties.predict_files import predict_files
    from app.engine.properties.predictor import PropertyPredictor

    records = predict_files([PILE], PropertyPredictor(device="cpu", folder=tiny_models))
    assert records
    for record in records:
        predicted = record["formation_energy_per_atom"] is not None
        assert predicted != bool(record["error"]), record
        if record["error"]:
            assert "\n" not in record["error"] and "Traceback" not in record["error"]
    disordered = [r for r in records if Path(r["source"]).name in ("vacancies.cif", "occupancy_rounding.cif",
                                                                  "mixed_occupancy_experimental.cif")]
    assert len(disordered) == 3
    assert all(r["error"] is None and any("ordered approximant" in w for w in r["warnings"]) for r in disordered)
    broken = [r for r in records if "/broken/" in r["source"]]
    assert broken and all(r["error"] for r in broken)
    assert all(r["error"] is None for r in records if "/broken/" not in r["source"])
