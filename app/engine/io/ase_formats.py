"""Formats pymatgen does not read, through ASE (``ase.io.read`` then ``AseAtomsAdaptor``).

Each reader returns one pymatgen ``Structure`` per frame. Problems become
:class:`StructureReadError` with a message naming the format; molecules without a periodic
cell are refused clearly, since the property models need a crystal.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from app.engine.core.errors import StructureReadError

#: Format names of ASE by file suffix; ``None`` means "decide from the content".
ASE_SUFFIXES: dict[str, str | None] = {
    ".xyz": "extxyz", ".extxyz": "extxyz", ".cell": "castep-cell", ".pwi": "espresso-in", ".in": None,
    ".axsf": "xsf", ".lmp": "lammps-data", ".lammps": "lammps-data", ".data": "lammps-data",
}
#: File names (without compression suffix) that fix the format.
ASE_NAMES: dict[str, str] = {"geometry.in": "aims", "control.in": "aims"}
FORMAT_LABELS = {
    "extxyz": "an extended XYZ file", "castep-cell": "a CASTEP .cell file", "espresso-in": "a Quantum ESPRESSO input",
    "xsf": "an XCrySDen (A)XSF file", "aims": "an FHI-aims geometry.in", "lammps-data": "a LAMMPS data file",
    "res": "a SHELX/AIRSS RES file",
}


def ase_format(name: str, text: str) -> str | None:
    """ASE format for a file called ``name`` (compression suffix already stripped) holding ``text``."""
    lower = name.lower()
    if lower in ASE_NAMES:
        return ASE_NAMES[lower]
    if lower.startswith("data.") or lower.endswith(".data") and "atoms" in text.lower():
        return "lammps-data"
    suffix = Path(lower).suffix
    if suffix in ASE_SUFFIXES and ASE_SUFFIXES[suffix]:
        return ASE_SUFFIXES[suffix]
    if re.search(r"^\s*&system\b", text, re.M | re.I):
        return "espresso-in"
    if re.search(r"^\s*(lattice_vector|atom_frac|atom)\s", text, re.M):
        return "aims"
    if re.search(r"^\s*%block\s+(lattice_|positions_)", text, re.M | re.I):
        return "castep-cell"
    return None


def read_with_ase(text: str, fmt: str) -> list:
    """Structures of every frame of ``text`` read as ASE format ``fmt``.

    Returns
    -------
    list of pymatgen.core.Structure
        One per frame, in file order.

    Raises
    ------
    StructureReadError
        When ASE cannot read it, or when a frame has no periodic cell.
    """
    import ase.io
    from pymatgen.io.ase import AseAtomsAdaptor

    label = FORMAT_LABELS.get(fmt, f"an ASE '{fmt}' file")
    if fmt == "espresso-in":
        if not re.search(r"^\s*ATOMIC_POSITIONS", text, re.M | re.I):
            raise StructureReadError("the Quantum ESPRESSO input has no ATOMIC_POSITIONS card.")
        text = _espresso_with_explicit_cell(text)
    try:
        frames = _ase_frames(ase.io, text, fmt)
    except StructureReadError:
        raise
    except (IndexError, StopIteration, EOFError):
        raise StructureReadError(f"could not be read as {label}: the file looks truncated or incomplete.") from None
    except Exception as exc:
        if "StopIteration" in str(exc):  # a generator ran out of lines
            raise StructureReadError(f"could not be read as {label}: the file looks truncated or incomplete.") from None
        raise StructureReadError(f"could not be read as {label} ({_first_line(exc)}).") from None
    if not frames:
        raise StructureReadError(f"{label} with no structure in it.")
    structures = []
    for number, atoms in enumerate(frames, start=1):
        if len(atoms) == 0:
            raise StructureReadError("the structure contains no atoms.")
        if not atoms.pbc.any() or abs(np.linalg.det(atoms.cell.array)) < 1e-6:
            where = f" (frame {number})" if len(frames) > 1 else ""
            raise StructureReadError(f"this is a molecule or cluster without a periodic cell{where}; the property "
                                     "models need a crystal (add lattice vectors, e.g. Lattice= in extended XYZ).")
        atoms.pbc = True
        structures.append(AseAtomsAdaptor.get_structure(atoms))
    return structures


def _ase_frames(ase_io, text: str, fmt: str) -> list:
    if fmt == "lammps-data":
        if not re.search(r"^\s*Masses\s*$", text, re.M):
            raise StructureReadError("the LAMMPS data file has no Masses section, so its atom types cannot be "
                                     "mapped to elements.")
        errors = []
        for style in (None, "atomic", "charge", "full"):  # None: the style named in "Atoms # style"
            try:
                kwargs = {"atom_style": style} if style else {}
                return [_read_via_file(ase_io, text, fmt, **kwargs)]
            except Exception as exc:  # try the next atom style
                errors.append(exc)
        raise errors[-1]
    # keyword_tolerance=3: never look for (or run) a CASTEP binary to validate keywords.
    kwargs = {"calculator_args": {"keyword_tolerance": 3}} if fmt == "castep-cell" else {}
    frames = _read_via_file(ase_io, text, fmt, index=":", **kwargs)
    return frames if isinstance(frames, list) else [frames]


def _read_via_file(ase_io, text: str, fmt: str, **kwargs):
    """Some ASE readers (FHI-aims) want a file name, not a stream: read a private temporary copy."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="crystal-read-") as folder:
        path = Path(folder, "input")
        path.write_text(text)
        return ase_io.read(path, format=fmt, **kwargs)


def _espresso_with_explicit_cell(text: str) -> str:
    """ASE reads only ``ibrav = 0``: rewrite other Bravais lattices as CELL_PARAMETERS (Å)."""
    from ase.io.espresso import read_fortran_namelist

    match = re.search(r"\bibrav\s*=\s*(-?\d+)", text, re.I)
    if not match or int(match.group(1)) == 0:
        return text
    try:
        namelists, _cards = read_fortran_namelist(io.StringIO(text))
        alat, cell = bravais_cell(namelists["system"])
    except StructureReadError:
        raise
    except Exception as exc:
        raise StructureReadError(f"the Quantum ESPRESSO lattice (ibrav = {match.group(1)}) could not be built "
                                 f"({_first_line(exc)}).") from None
    # In units of alat: ASE keeps celldm(1)/A for positions given in alat units.
    rows = "\n".join(" ".join(f"{v:.10f}" for v in row) for row in np.asarray(cell) / alat)
    text = text[: match.start()] + "ibrav = 0" + text[match.end():]
    text = re.sub(r"^\s*CELL_PARAMETERS.*(\n.*){3}", "", text, flags=re.M | re.I)
    return text.rstrip() + f"\nCELL_PARAMETERS alat\n{rows}\n"


_BOHR = 0.529177210903  # Å


def bravais_cell(system: dict) -> tuple[float, np.ndarray]:
    """Lattice constant (Å) and lattice vectors (rows, Å) of Quantum ESPRESSO's ``ibrav`` with ``celldm(i)`` or ``A, B, C, cosAB...``.

    Follows the pw.x input description; ibrav values without a common use here are refused.
    """
    ibrav = int(system["ibrav"])
    celldm = {i: float(system.get(f"celldm({i})", 0.0) or 0.0) for i in range(1, 7)}
    a = celldm[1] * _BOHR if celldm[1] else float(system.get("a", 0.0) or 0.0)
    if a <= 0:
        raise StructureReadError(f"ibrav = {ibrav} needs celldm(1) or A for the lattice constant.")
    b = celldm[2] or float(system.get("b", 0.0) or 0.0) / a
    c = celldm[3] or float(system.get("c", 0.0) or 0.0) / a
    cos1 = celldm[4] or float(system.get("cosab", system.get("cosbc", 0.0)) or 0.0)
    r3 = np.sqrt(3.0)
    vectors = {
        1: [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        2: [[-0.5, 0, 0.5], [0, 0.5, 0.5], [-0.5, 0.5, 0]],
        3: [[0.5, 0.5, 0.5], [-0.5, 0.5, 0.5], [-0.5, -0.5, 0.5]],
        -3: [[-0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.5, 0.5, -0.5]],
        4: [[1, 0, 0], [-0.5, r3 / 2, 0], [0, 0, c]],
        6: [[1, 0, 0], [0, 1, 0], [0, 0, c]],
        7: [[0.5, -0.5, c / 2], [0.5, 0.5, c / 2], [-0.5, -0.5, c / 2]],
        8: [[1, 0, 0], [0, b, 0], [0, 0, c]],
        9: [[0.5, b / 2, 0], [-0.5, b / 2, 0], [0, 0, c]],
        10: [[0.5, 0, c / 2], [0.5, b / 2, 0], [0, b / 2, c / 2]],
        11: [[0.5, b / 2, c / 2], [-0.5, b / 2, c / 2], [-0.5, -b / 2, c / 2]],
        12: [[1, 0, 0], [b * cos1, b * np.sqrt(max(1 - cos1**2, 0.0)), 0], [0, 0, c]],
    }
    if ibrav == 5:
        tx, ty, tz = np.sqrt((1 - cos1) / 2), np.sqrt((1 - cos1) / 6), np.sqrt((1 + 2 * cos1) / 3)
        vectors[5] = [[tx, -ty, tz], [0, 2 * ty, tz], [-tx, -ty, tz]]
    if ibrav == 14:
        from pymatgen.core import Lattice

        angles = [np.degrees(np.arccos(celldm[i])) if celldm[i] else 90.0 for i in (4, 5, 6)]
        return a, Lattice.from_parameters(a, b * a, c * a, *angles).matrix
    if ibrav not in vectors:
        raise StructureReadError(f"ibrav = {ibrav} is not supported; give the cell as CELL_PARAMETERS with ibrav = 0.")
    return a, a * np.asarray(vectors[ibrav], dtype=float)


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text[:200]
