"""The shipped DING models: known chemistry comes out right, and generation follows the target."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def generator():
    from app.engine.compositions.runtime import CompositionGenerator

    return CompositionGenerator()


def test_shipped_predictors_know_simple_compounds(generator):
    records = {r["formula"]: r for r in generator.predictor.predict(["NaCl", "Al2O3", "Cu"])}
    assert records["Al2O3"]["formation_enthalpy"] < -2.5  # DFT ≈ -3.4 eV/atom
    assert -3.0 < records["NaCl"]["formation_enthalpy"] < -1.5  # DFT ≈ -2.1 eV/atom
    assert abs(records["Cu"]["formation_enthalpy"]) < 0.3  # an element: 0 by definition
    assert 5 < records["Al2O3"]["volume_per_atom"] < 14 and 15 < records["NaCl"]["volume_per_atom"] < 30


@pytest.fixture(scope="module")
def low_and_high(generator):
    return (generator.generate({"formation_enthalpy": -2.0}, n=500, seed=0),
            generator.generate({"formation_enthalpy": -0.5}, n=500, seed=0))


def test_generated_compositions_move_with_the_target(low_and_high):
    low, high = low_and_high
    assert high.median("formation_enthalpy") - low.median("formation_enthalpy") >= 0.8


def test_generated_compositions_are_mostly_unique_and_new(low_and_high):
    for result in low_and_high:
        counts = result.counts
        assert counts["decoded"] >= 450
        assert counts["unique"] >= 0.9 * counts["decoded"]
        assert counts["not_in_training"] >= 0.5 * counts["unique"]


def test_shipped_structure_step_places_a_spinel(generator):
    from app.engine.compositions.structures import PrototypeLibrary

    from app.engine.compositions.formula import normalise_formula

    proposals = PrototypeLibrary.load().propose("ZnAl2O4", volume_per_atom=10.0, limit=3)
    assert proposals and all(p.structure.composition.reduced_formula == normalise_formula("ZnAl2O4")
                             for p in proposals)
    assert all(p.structure.volume / len(p.structure) == pytest.approx(10.0) for p in proposals)
