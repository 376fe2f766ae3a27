"""CIF variants that pymatgen misreads or refuses, rewritten into the plain form it reads.

- positions only as Cartesian ``_atom_site_Cartn_x/y/z`` (with a cell): converted to fractional
  coordinates with ``_atom_sites_Cartn_tran_matrix`` when given, else with the CIF default
  orientation (a along x, b in the xy plane);
- ``?`` / ``.`` (unknown / not applicable) occupancies, read by pymatgen as 0 or dropped: read as 1;
- ``?`` / ``.`` type symbols: the element is taken from the site label.

Files that need none of this are passed on unchanged.
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Lattice

_PLACEHOLDERS = ("?", ".")
_CARTESIAN = ("_atom_site_Cartn_x", "_atom_site_Cartn_y", "_atom_site_Cartn_z")
_FRACTIONAL = ("_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z")


def normalise_cif_block(text: str, warns: list[str]) -> str:
    """CIF text of one data block with the variants above rewritten; ``text`` itself when none applies."""
    lowered = text.lower()
    if "_atom_site_cartn_x" not in lowered and not any(p in text for p in _PLACEHOLDERS):
        return text
    from pymatgen.io.cif import CifFile  # imported when needed (~0.5 s): most files need no rewriting

    try:
        cif = CifFile.from_str(text)
    except Exception:  # malformed: let the parser report it in its own words
        return text
    if not cif.data:
        return text
    block = next(iter(cif.data.values()))
    changed = _cartesian_to_fractional(block, warns)
    changed |= _fill_placeholders(block, warns)
    return str(cif) if changed else text


def _loop_of(block, key: str) -> list[str] | None:
    return next((loop for loop in block.loops if key in loop), None)


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _cartesian_to_fractional(block, warns: list[str]) -> bool:
    from pymatgen.io.cif import str2float

    data = block.data
    if "_atom_site_fract_x" in data or not all(k in data for k in _CARTESIAN):
        return False
    try:
        matrix = _orthogonalisation_matrix(data)
        cart = np.array([[str2float(v) for v in _as_list(data[k])] for k in _CARTESIAN]).T
    except (KeyError, ValueError, TypeError):
        return False  # no usable cell or numbers: the reader's checks say what is missing
    frac = np.linalg.solve(matrix, cart.T).T  # cart = M @ frac
    loop = _loop_of(block, "_atom_site_Cartn_x")
    for axis, key in enumerate(_FRACTIONAL):
        data[key] = [f"{x:.6f}" for x in frac[:, axis]]
        if loop is not None:
            loop.append(key)
    how = ("its _atom_sites_Cartn_tran_matrix" if "_atom_sites_Cartn_tran_matrix_11" in data
           else "the cell in the CIF default orientation (a along x, b in the xy plane)")
    warns.append(f"Atom positions were given only as Cartesian coordinates; they were converted with {how}.")
    return True


def _orthogonalisation_matrix(data: dict) -> np.ndarray:
    """3x3 matrix M with cart = M @ frac (Å)."""
    from pymatgen.io.cif import str2float

    if "_atom_sites_Cartn_tran_matrix_11" in data:
        return np.array([[str2float(data[f"_atom_sites_Cartn_tran_matrix_{i}{j}"]) for j in "123"] for i in "123"])
    lengths = [str2float(data[f"_cell_length_{x}"]) for x in "abc"]
    angles = [str2float(data[f"_cell_angle_{x}"]) for x in ("alpha", "beta", "gamma")]
    return Lattice.from_parameters(*lengths, *angles, vesta=True).matrix.T


def _fill_placeholders(block, warns: list[str]) -> bool:
    data, changed = block.data, False
    if "_atom_site_occupancy" in data:
        values = _as_list(data["_atom_site_occupancy"])
        unknown = sum(v.strip() in _PLACEHOLDERS for v in values)
        if unknown:
            data["_atom_site_occupancy"] = ["1" if v.strip() in _PLACEHOLDERS else v for v in values]
            warns.append(f"{unknown} site occupancies were given as '?' or '.'; they were read as 1.")
            changed = True
    if "_atom_site_type_symbol" in data and "_atom_site_label" in data:
        symbols, labels = _as_list(data["_atom_site_type_symbol"]), _as_list(data["_atom_site_label"])
        if any(s.strip() in _PLACEHOLDERS for s in symbols) and len(symbols) == len(labels):
            data["_atom_site_type_symbol"] = [lab if s.strip() in _PLACEHOLDERS else s for s, lab in zip(symbols, labels)]
            warns.append("Some atom type symbols were '?' or '.'; the elements were taken from the site labels.")
            changed = True
    return changed
