"""Element feature vectors for the crystal graph (CGCNN, Xie & Grossman 2018, Table S2).

Each element is described by nine properties, each one-hot encoded into a fixed number of
categories (discrete properties) or bins (continuous properties), concatenated into one
91-long vector. All values come from pymatgen's element data, so no table ships with the app.

| property | source | encoding |
|---|---|---|
| group number | ``Element.group`` | 18 categories |
| period | ``Element.row`` | 7 categories |
| electronegativity (Pauling) | ``Element.X`` | 10 bins over [0.5, 4.0] |
| covalent radius (Å) | ``CovalentRadius.radius`` | 10 bins over [0.25, 2.5] |
| valence electrons | outer s + p (+ open d) electrons | 12 categories (1..12) |
| first ionisation energy (eV) | ``Element.ionization_energy`` | 10 bins, log scale over [3, 25] |
| electron affinity (eV) | ``Element.electron_affinity`` | 10 bins over [-3, 3.7] |
| block | ``Element.block`` | 4 categories (s, p, d, f) |
| atomic volume (cm³/mol) | ``Element.molar_volume`` | 10 bins, log scale over [1.5, 75] |

A property pymatgen does not know for an element leaves its slice all zero.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings

import numpy as np

logger = logging.getLogger(__name__)

#: Highest atomic number the feature table covers (Z = 1 .. MAX_Z).
MAX_Z = 100

_BLOCKS = ("s", "p", "d", "f")


def _one_hot(index: int | None, size: int) -> np.ndarray:
    out = np.zeros(size, dtype=np.float32)
    if index is not None and 0 <= index < size:
        out[index] = 1.0
    return out


def _binned(value: float | None, low: float, high: float, bins: int, log: bool = False) -> np.ndarray:
    if value is None or not math.isfinite(value):
        return np.zeros(bins, dtype=np.float32)
    if log:
        value, low, high = math.log(max(value, 1e-6)), math.log(low), math.log(high)
    fraction = (value - low) / (high - low)
    return _one_hot(int(np.clip(math.floor(fraction * bins), 0, bins - 1)), bins)


def _safe(getter):
    """Return ``getter()`` or None when pymatgen has no value (it warns or raises)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = getter()
    except Exception:  # pymatgen raises different types for missing data
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _valence_electrons(element) -> int | None:
    """Electrons outside the noble-gas core, counting d electrons only while the d shell is open."""
    try:
        shells = element.full_electronic_structure
    except Exception:
        return None
    if not shells:
        return None
    outer_n = max(n for n, _, _ in shells)
    count = 0
    for n, orbital, electrons in shells:
        if n == outer_n and orbital in ("s", "p"):
            count += electrons
        elif orbital == "d" and n == outer_n - 1 and electrons < 10:
            count += electrons
    return count or None


def element_features(z: int) -> np.ndarray:
    """Feature vector of the element with atomic number ``z``.

    Returns
    -------
    numpy.ndarray
        Shape ``(FEATURE_LENGTH,)``, float32, one-hot blocks in the order of the module table.
    """
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius
    from pymatgen.core.periodic_table import Element

    element = Element.from_Z(z)
    group = _safe(lambda: element.group)
    row = _safe(lambda: element.row)
    valence = _valence_electrons(element)
    block = element.block if element.block in _BLOCKS else None
    parts = [
        _one_hot(int(group) - 1 if group else None, 18),
        _one_hot(int(row) - 1 if row else None, 7),
        _binned(_safe(lambda: element.X), 0.5, 4.0, 10),
        _binned(CovalentRadius.radius.get(element.symbol), 0.25, 2.5, 10),
        _one_hot(valence - 1 if valence else None, 12),
        _binned(_safe(lambda: element.ionization_energy), 3.0, 25.0, 10, log=True),
        _binned(_safe(lambda: element.electron_affinity), -3.0, 3.7, 10),
        _one_hot(_BLOCKS.index(block) if block else None, 4),
        _binned(_safe(lambda: element.molar_volume), 1.5, 75.0, 10, log=True),
    ]
    return np.concatenate(parts)


FEATURE_LENGTH = 18 + 7 + 10 + 10 + 12 + 10 + 10 + 4 + 10


@functools.lru_cache(maxsize=1)
def element_feature_table() -> np.ndarray:
    """Feature vectors of all elements, indexed by atomic number.

    Returns
    -------
    numpy.ndarray
        Shape ``(MAX_Z + 1, FEATURE_LENGTH)``, float32; row 0 (no element) is zero.
    """
    table = np.zeros((MAX_Z + 1, FEATURE_LENGTH), dtype=np.float32)
    for z in range(1, MAX_Z + 1):
        table[z] = element_features(z)
    return table
