"""Space groups of crystals, found one way everywhere (library display, novelty index, filters)."""

from __future__ import annotations

#: Tolerance (Å) for spglib: loose enough for relaxed DFT cells and decoded candidates.
SYMPREC = 0.1


def space_group(structure) -> tuple[str, int] | None:
    """Hermann-Mauguin symbol and number of ``structure``, or None if spglib cannot tell."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        analyzer = SpacegroupAnalyzer(structure, symprec=SYMPREC)
        return analyzer.get_space_group_symbol(), int(analyzer.get_space_group_number())
    except Exception:  # spglib raises assorted types on degenerate or disordered cells
        return None


def format_space_group(found: tuple[str, int] | None) -> str:
    """``"Fm-3m (225)"`` for a result of :func:`space_group`, ``"?"`` for None."""
    return f"{found[0]} ({found[1]})" if found else "?"


def space_group_label(structure) -> str:
    """``"Fm-3m (225)"``, or ``"?"`` when spglib cannot analyse the structure."""
    return format_space_group(space_group(structure))
