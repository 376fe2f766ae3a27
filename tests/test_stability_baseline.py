"""The ion-substitution baseline finds substitutions for mixed-anion perovskites with rare ions."""

import pytest
from pymatgen.core import Lattice, Structure


def perovskite(a_site, b_site, anions):
    return Structure(Lattice.cubic(4.0), [a_site, b_site, *anions],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


@pytest.mark.parametrize("base", [
    perovskite("Mg", "Zr", ["O", "O", "F"]),   # Zr3+: no change of the others above 1e-3
    perovskite("As", "Pt", ["S", "O", "O"]),   # every balanced guess holds an ion the model does not know
])
def test_rare_or_unknown_ions_still_give_neutral_substitutions(base):
    from app.engine.training.evaluate_generator import substitution_baseline

    substituted = substitution_baseline(base, 5)
    formulas = [s.composition.reduced_formula for s in substituted]
    assert len(formulas) == 5 == len(set(formulas)) and base.composition.reduced_formula not in formulas
    assert all(len(s) == 5 and s.lattice.abc == base.lattice.abc for s in substituted)
    for structure in substituted:
        assert structure.composition.oxi_state_guesses(max_sites=-1, all_oxi_states=True)
