"""Charge balance by an oxidation-state guess, shared by the crystal and the composition generators."""

from __future__ import annotations

import functools
import warnings

# pymatgen's guess enumerates every combination of oxidation states, which grows exponentially
# with the number of elements; beyond this many, the composition is reported as not balanced
# rather than stalling (the OQMD training compositions have at most 7).
MAX_ELEMENTS_FOR_GUESS = 8


@functools.lru_cache(maxsize=8192)
def charge_balanced(reduced_formula: str) -> bool:
    """True if the composition has a charge-neutral set of common oxidation states, or is an
    intermetallic (all metals or metalloids), where oxidation states do not apply.

    Parameters
    ----------
    reduced_formula : str
        A formula pymatgen reads, e.g. ``"Al2O3"``. Compositions of more than
        ``MAX_ELEMENTS_FOR_GUESS`` elements are not guessed and count as not balanced.
    """
    from pymatgen.core import Composition

    composition = Composition(reduced_formula)
    if len(composition.elements) > MAX_ELEMENTS_FOR_GUESS:
        return False
    if all(element.is_metal or element.is_metalloid for element in composition.elements):
        return True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(composition.oxi_state_guesses(max_sites=-1))
