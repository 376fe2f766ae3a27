"""SHELX ``.ins``/``.res`` files (SHELXL input and refinement output) turned into CIF text.

pymatgen's ``.res`` reader and ASE's read the AIRSS dialect (no symmetry cards), so files from
SHELXL, Olex2 or VESTA lose their symmetry or fail there. The cards used here are CELL, LATT
(centring; positive = centrosymmetric), SYMM, SFAC, FVAR and atom lines
``name sfac x y z sof [U...]`` (a line ending in ``=`` continues on the next one). The CIF is
then read by the CIF path, which applies the symmetry and handles partial occupancy.
"""

from __future__ import annotations

import re

import numpy as np

from app.engine.core.errors import StructureReadError

# Instructions that start a line and are not atoms (SHELXL manual, section "Instructions").
_COMMANDS = set("""
TITL CELL ZERR LATT SYMM SFAC DISP UNIT LAUE REM MORE TIME END HKLF OMIT SHEL BASF TWIN EXTI SWAT HOPE MERG SPEC
RESI MOVE ANIS AFIX HFIX FRAG FEND EXYZ EADP EQIV CONN PART BIND FREE DFIX DANG BUMP SAME SADI CHIV FLAT DELU SIMU
DEFS ISOR NCSY SUMP L.S. CGLS BLOC DAMP STIR WGHT FVAR BOND CONF MPLA RTAB HTAB LIST ACTA SIZE TEMP WPDB FMAP GRID
PLAN MOLE ABIN ANSC ANSR NEUT TWST RIGU XNPD SHEL STIR BEDE LONE
""".split())
_CENTRING = {1: [], 2: ["x+1/2,y+1/2,z+1/2"], 3: ["x+2/3,y+1/3,z+1/3", "x+1/3,y+2/3,z+2/3"],
             4: ["x,y+1/2,z+1/2", "x+1/2,y,z+1/2", "x+1/2,y+1/2,z"], 5: ["x,y+1/2,z+1/2"],
             6: ["x+1/2,y,z+1/2"], 7: ["x+1/2,y+1/2,z"]}
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(\(\d+\))?$")


def looks_like_shelx(text: str) -> bool:
    """Whether ``text`` has the CELL and SFAC cards of a SHELX file."""
    return bool(re.search(r"^CELL\s", text, re.M | re.I) and re.search(r"^SFAC\s", text, re.M | re.I))


def _logical_lines(text: str) -> list[list[str]]:
    lines, pending = [], ""
    for raw in text.splitlines():
        line = raw.split("!")[0].rstrip()
        if pending:
            line, pending = pending + " " + line.strip(), ""
        if line.endswith("="):
            pending = line[:-1]
            continue
        if line.strip():
            lines.append(line.split())
    return lines


def _occupancy(sof: float, free_variables: list[float]) -> float:
    """SHELX site occupation factor: 10 + p fixed, m*10 + p -> p * fv(m), negative -> p * (1 - fv(m))."""
    magnitude = abs(sof)
    m = int(magnitude // 10)
    p = magnitude - 10 * m
    if m == 0:
        return sof
    if m == 1:
        return p
    fv = free_variables[m - 1] if m - 1 < len(free_variables) else 1.0
    return p * fv if sof > 0 else p * (1.0 - fv)


def shelx_to_cif(text: str) -> str:
    """CIF text equivalent to a SHELX ``.ins``/``.res`` file (raises :class:`StructureReadError`)."""
    cell, latt, symm, sfac, free_variables, atoms = None, 1, ["x,y,z"], [], [1.0], []
    for tokens in _logical_lines(text):
        key = tokens[0].upper()
        if key == "CELL":
            if len(tokens) < 8:
                raise StructureReadError("the SHELX CELL card needs a wavelength and six cell parameters.")
            cell = tokens[2:8]
        elif key == "LATT" and len(tokens) > 1:
            latt = int(float(tokens[1]))
        elif key == "SYMM":
            symm.append("".join(tokens[1:]).lower())
        elif key == "SFAC":
            sfac += [t for t in tokens[1:] if not _NUMBER.match(t)]  # long form lists scattering factors too
        elif key == "FVAR":
            free_variables = [float(t) for t in tokens[1:]]
        elif key in ("HKLF", "END"):
            break
        elif key not in _COMMANDS and not re.fullmatch(r"Q\d+", key) and len(tokens) >= 6 and tokens[1].isdigit():
            atoms.append(tokens)
    if cell is None:
        raise StructureReadError("the SHELX file has no CELL card.")
    if not atoms:
        raise StructureReadError("the SHELX file lists no atoms.")
    operations = [_negate(op) for op in symm] + symm if latt > 0 else list(symm)  # LATT > 0: centrosymmetric
    centring = _CENTRING.get(abs(latt), [])
    full = list(operations)
    for shift in centring:
        full += [_add_shift(op, shift) for op in operations]
    rows = []
    for tokens in atoms:
        index = int(tokens[1])
        if not 1 <= index <= len(sfac):
            raise StructureReadError(f"atom {tokens[0]} refers to scattering factor {index}, but SFAC lists {len(sfac)}.")
        x, y, z = (_coordinate(t) for t in tokens[2:5])
        # SHELX occupancies include the site-symmetry factor (orbit size / general multiplicity).
        occupancy = _occupancy(float(tokens[5]), free_variables) * len(full) / _orbit_size(full, (x, y, z))
        if abs(occupancy - 1.0) < 5e-3:  # sofs are written with 5 decimals, e.g. 10.02083 = 1/48
            occupancy = 1.0
        rows.append(f"{tokens[0]} {sfac[index - 1].capitalize()} {x:.6f} {y:.6f} {z:.6f} {occupancy:.4f}")
    names = ("a", "b", "c", "alpha", "beta", "gamma")
    header = "\n".join(f"_cell_{'length' if i < 3 else 'angle'}_{n} {v}" for i, (n, v) in enumerate(zip(names, cell)))
    ops = "\n".join(f"'{op}'" for op in dict.fromkeys(full))
    return (f"data_shelx\n{header}\nloop_\n_symmetry_equiv_pos_as_xyz\n{ops}\nloop_\n_atom_site_label\n"
            "_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
            "_atom_site_occupancy\n" + "\n".join(rows) + "\n")


def _orbit_size(operations: list[str], position: tuple[float, float, float]) -> int:
    from pymatgen.core.operations import SymmOp

    images = np.array([SymmOp.from_xyz_str(op).operate(position) for op in operations]) % 1.0
    images[np.isclose(images, 1.0, atol=1e-4)] = 0.0
    unique: list[np.ndarray] = []
    for image in images:
        if not any(np.all(np.abs((image - u + 0.5) % 1.0 - 0.5) < 1e-3) for u in unique):
            unique.append(image)
    return len(unique)


def _coordinate(token: str) -> float:
    """SHELX fixes a coordinate by adding 10 (e.g. 10.5 = 0.5 fixed)."""
    value = float(token)
    return value - 10.0 if value >= 5 else value + 10.0 if value <= -5 else value


def _negate(op: str) -> str:
    parts = []
    for term in op.split(","):
        term = term.strip()
        flipped = "".join("-" if c == "+" else "+" if c == "-" else c for c in term)
        parts.append(flipped if flipped[:1] in "+-" else "-" + flipped)
    return ",".join(p.lstrip("+") for p in parts)


def _add_shift(op: str, shift: str) -> str:
    extra = [s.strip()[1:] for s in shift.split(",")]  # "x+1/2" -> "+1/2"
    return ",".join(term + add if add else term for term, add in zip(op.split(","), extra))
