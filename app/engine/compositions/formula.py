"""Chemical formulas as DING sees them: parsing, normalising and the one-hot count feature vector.

DING (Pathak et al. 2020) describes a composition by one block per element of a fixed vocabulary;
each block is a one-hot vector over the element's count in the formula unit, 0 .. ``MAX_COUNT``
(11 entries). Concatenated, the blocks form the feature vector (here 85 × 11 = 935 entries; the
paper's 89 elements gave 979). Formulas are normalised to their reduced formula unit (``Fe2O2`` →
``FeO``), because the data and the model know compositions, not cells.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np

from app.engine.core.errors import CrystalDesignerError

#: Elements the DING models know: every element of the OQMD composition data, by atomic number.
VOCABULARY: tuple[str, ...] = (
    "H", "Li", "Be", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "K", "Ca", "Sc",
    "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Rb", "Sr", "Y",
    "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba",
    "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta",
    "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Ac", "Th", "Pa", "U", "Np", "Pu",
)
ELEMENT_INDEX = {symbol: i for i, symbol in enumerate(VOCABULARY)}

#: Largest count of one element in a reduced formula unit the feature vector can hold.
MAX_COUNT = 10
BLOCK = MAX_COUNT + 1
FEATURE_LENGTH = len(VOCABULARY) * BLOCK

_FORMULA_CHARACTERS = re.compile(r"^[A-Za-z0-9.()\[\]\s]+$")


class FormulaError(CrystalDesignerError):
    """A formula cannot be read, or lies outside what the DING models know."""


def parse_formula(text: str) -> dict[str, int]:
    """Reduced integer element counts of a formula.

    Parameters
    ----------
    text : str
        A chemical formula such as ``"Al2O3"``, ``"La1Pb1Re2"`` or ``"Fe0.5O0.5"``.

    Returns
    -------
    dict[str, int]
        Element symbol → count in the reduced formula unit (``"Fe2O2"`` → ``{"Fe": 1, "O": 1}``).

    Raises
    ------
    FormulaError
        When the formula cannot be parsed, has non-whole proportions, an element outside
        :data:`VOCABULARY`, or more than :data:`MAX_COUNT` atoms of one element per formula unit.
    """
    from pymatgen.core import Composition, Element

    cleaned = (text or "").strip()
    if not cleaned or not _FORMULA_CHARACTERS.match(cleaned):
        raise FormulaError(f"'{text}' is not a chemical formula (expected e.g. Al2O3).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            composition = Composition(cleaned)
            reduced, _ = composition.get_reduced_composition_and_factor()
    except Exception as error:  # pymatgen raises ValueError, KeyError, ... for bad formulas
        raise FormulaError(f"'{text}' is not a chemical formula: {error}") from error
    if composition.num_atoms <= 0:
        raise FormulaError(f"'{text}' contains no atoms.")
    not_elements = [str(e) for e in composition.elements if not isinstance(e, Element)]
    if not_elements:
        raise FormulaError(f"'{text}' is not a chemical formula: {', '.join(not_elements)} is not an element.")
    counts = _whole_counts({str(element): amount for element, amount in reduced.items()}, text)
    unknown = sorted(set(counts) - set(ELEMENT_INDEX))
    if unknown:
        raise FormulaError(f"'{text}' contains {', '.join(unknown)}, outside the {len(VOCABULARY)} elements "
                           "the composition models were trained on.")
    too_many = {element: n for element, n in counts.items() if n > MAX_COUNT}
    if too_many:
        listed = ", ".join(f"{n} {element}" for element, n in too_many.items())
        raise FormulaError(f"'{text}' has {listed} per formula unit; the composition models handle at most "
                           f"{MAX_COUNT} atoms of one element.")
    return counts


def _whole_counts(amounts: dict[str, float], text: str) -> dict[str, int]:
    """Smallest whole-number counts proportional to ``amounts`` (fractions like 0.5 or 1/3 allowed)."""
    for multiplier in range(1, MAX_COUNT + 1):
        scaled = {element: amount * multiplier for element, amount in amounts.items()}
        if all(abs(value - round(value)) < 1e-3 * max(1.0, value) for value in scaled.values()):
            counts = {element: int(round(value)) for element, value in scaled.items()}
            divisor = math.gcd(*counts.values())
            return {element: n // divisor for element, n in counts.items()}
    raise FormulaError(f"'{text}' has non-whole proportions; give the formula unit with whole counts.")


def formula_string(counts: dict[str, int]) -> str:
    """Normalised formula of reduced counts, written as pymatgen writes it (``"Al2O3"``, ``"NaCl"``)."""
    from pymatgen.core import Composition

    if not counts:
        raise FormulaError("An empty composition has no formula.")
    return Composition(counts).reduced_formula


def normalise_formula(text: str) -> str:
    """Normalised formula of ``text`` (raises :class:`FormulaError` like :func:`parse_formula`)."""
    return formula_string(parse_formula(text))


def count_vector(counts: dict[str, int]) -> np.ndarray:
    """Per-element counts over :data:`VOCABULARY`, shape ``(len(VOCABULARY),)``, int64."""
    out = np.zeros(len(VOCABULARY), dtype=np.int64)
    for element, n in counts.items():
        out[ELEMENT_INDEX[element]] = n
    return out


def feature_vector(counts: dict[str, int]) -> np.ndarray:
    """DING feature vector of a composition, shape ``(FEATURE_LENGTH,)``, float32 (one-hot blocks)."""
    return one_hot_counts(count_vector(counts)[None, :])[0]


def one_hot_counts(count_rows: np.ndarray) -> np.ndarray:
    """One-hot blocks of count rows: ``(n, len(VOCABULARY))`` ints → ``(n, FEATURE_LENGTH)`` float32."""
    count_rows = np.asarray(count_rows, dtype=np.int64)
    out = np.zeros((count_rows.shape[0], len(VOCABULARY), BLOCK), dtype=np.float32)
    rows, elements = np.indices(count_rows.shape)
    out[rows, elements, np.clip(count_rows, 0, MAX_COUNT)] = 1.0
    return out.reshape(count_rows.shape[0], FEATURE_LENGTH)


def counts_from_vector(count_row: np.ndarray) -> dict[str, int]:
    """Reduced element counts of one count row (zeros dropped; empty dict for an empty row)."""
    counts = {VOCABULARY[i]: int(n) for i, n in enumerate(np.asarray(count_row)) if n > 0}
    if not counts:
        return {}
    divisor = math.gcd(*counts.values())
    return {element: n // divisor for element, n in counts.items()}
