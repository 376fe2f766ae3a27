"""VASP 4 POSCARs, which have no species line: the elements come from the comment or a POTCAR beside it."""

from __future__ import annotations

import re
from pathlib import Path

from pymatgen.core import Element

from app.engine.io.compression import COMPRESSION_SUFFIXES, decompress

_POTCAR_ELEMENT = re.compile(r"^\s*TITEL\s*=\s*\S+\s+([A-Z][a-z]?)", re.M)


def _counts_line(lines: list[str]) -> list[int] | None:
    """Counts of each species on line 6 (VASP 4 has no species line above it)."""
    if len(lines) < 7:
        return None
    tokens = lines[5].split()
    try:
        return [int(t) for t in tokens] if tokens else None
    except ValueError:
        return None  # a species line (VASP 5) or garbage: not VASP 4


def _elements_from_comment(comment: str, n_species: int) -> list[str] | None:
    """``"Fe2 O3 hematite"`` or ``"Fe O"`` -> ``["Fe", "O"]`` when exactly ``n_species`` symbols lead the line."""
    symbols: list[str] = []
    for token in comment.split("#")[0].split():  # leading symbols or formulas: "Fe O", "Fe2 O3", "Fe2O3"
        parts = re.findall(r"([A-Z][a-z]?)(\d*\.?\d*)", token)
        if not parts or "".join(a + b for a, b in parts) != token or not all(Element.is_valid_symbol(a) for a, _ in parts):
            break
        symbols += [a for a, _ in parts]
    distinct = list(dict.fromkeys(symbols))
    return distinct if len(distinct) == n_species else None


def _elements_from_potcar(folder: Path, max_bytes: int) -> list[str] | None:
    for name in ["POTCAR"] + [f"POTCAR{s}" for s in COMPRESSION_SUFFIXES]:
        path = folder / name
        if path.is_file() and path.stat().st_size <= 10 * max_bytes:
            try:
                data, _ = decompress(path.read_bytes(), 10 * max_bytes)
            except Exception:  # an unreadable POTCAR just does not help
                return None
            found = _POTCAR_ELEMENT.findall(data.decode("latin-1"))
            return found or None
    return None


def add_species_line(text: str, folder: Path | None, max_bytes: int) -> tuple[str, str] | None:
    """A VASP 5 version of a VASP 4 POSCAR ``text``, and where its elements came from.

    Returns None when the file is not VASP 4 or no element names could be found.
    """
    lines = text.splitlines()
    counts = _counts_line(lines)
    if counts is None:
        return None
    elements, origin = _elements_from_comment(lines[0], len(counts)), "its comment line"
    if elements is None and folder is not None:
        elements, origin = _elements_from_potcar(folder, max_bytes), "the POTCAR beside it"
    if elements is None or len(elements) != len(counts):
        return None
    return "\n".join(lines[:5] + [" ".join(elements)] + lines[5:]) + "\n", origin
