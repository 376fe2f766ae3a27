"""How numbers are shown to people: per-property decimals, else 4 significant digits.

One rule for the command line's CSV/text output and the window's tables. JSON keeps full floats
unless a precision is asked for.
"""

from __future__ import annotations

import math

#: Significant digits for values without a per-property rule.
DEFAULT_SIGNIFICANT = 4
#: Decimals per property key: what the models' accuracy supports (formation energy MAE ≈ 0.045
#: eV/atom → 3 decimals; moduli ≈ 10 % in GPa → whole numbers; Poisson ratio, n and ε∞ → 2-3).
PROPERTY_DECIMALS: dict[str, int] = {
    "formation_energy_per_atom": 3,
    "energy_per_atom": 3,
    "e_above_hull": 3,
    "band_gap": 2,
    "bulk_modulus": 0,
    "shear_modulus": 0,
    "poisson_ratio": 3,
    "refractive_index": 2,
    "dielectric_constant": 2,
    "latent_distance": 3,
}


def round_significant(value: float, digits: int = DEFAULT_SIGNIFICANT) -> float:
    """``value`` rounded to ``digits`` significant digits (non-finite values unchanged)."""
    if not math.isfinite(value) or value == 0:
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def round_value(key: str, value, precision: int | None = None):
    """A number as it should be read: ``precision`` decimals if given, else the key's rule.

    Parameters
    ----------
    key : str
        Record key (property key or other column name).
    value : object
        Non-floats (and non-finite floats) come back unchanged.
    precision : int, optional
        Decimals for every float; None uses :data:`PROPERTY_DECIMALS`, else 4 significant digits.
    """
    if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value):
        return value
    if precision is not None:
        return round(value, precision)
    decimals = PROPERTY_DECIMALS.get(key)
    if decimals is not None:
        return float(round(value, decimals)) if decimals > 0 else float(round(value))
    return round_significant(value)


def format_value(key: str, value, precision: int | None = None) -> str:
    """Text of a value as shown in tables and CSV ("" for None, "nan" stays "nan")."""
    if value is None:
        return ""
    rounded = round_value(key, value, precision)
    if isinstance(rounded, float) and math.isfinite(rounded):
        decimals = precision if precision is not None else PROPERTY_DECIMALS.get(key)
        if decimals is not None:
            return f"{rounded:.{decimals}f}"
        return f"{rounded:.{DEFAULT_SIGNIFICANT}g}"
    return str(rounded)


def round_record(record: dict, precision: int | None = None) -> dict:
    """A copy of ``record`` with every float rounded by :func:`round_value` (nested dicts too)."""
    rounded = {}
    for key, value in record.items():
        if isinstance(value, dict):
            rounded[key] = round_record(value, precision)
        else:
            rounded[key] = round_value(key, value, precision)
    return rounded
