"""How elements look in the viewer: Jmol (CPK) colours and covalent radii (no Qt)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

#: Colour of elements missing from the Jmol table (RGB 0–1).
FALLBACK_COLOUR = (1.0, 0.08, 0.58)
#: Covalent radius (Å) of elements missing from the table.
FALLBACK_RADIUS = 1.5


@functools.lru_cache(maxsize=1)
def _jmol_colours() -> dict[str, tuple[float, float, float]]:
    """pymatgen's copy of the Jmol colour table, as RGB in 0–1."""
    import pymatgen.vis
    from monty.serialization import loadfn

    path = Path(pymatgen.vis.__file__).with_name("ElementColorSchemes.yaml")
    try:
        table = loadfn(path)["Jmol"]
    except (OSError, KeyError, ValueError) as error:
        logger.warning("The Jmol colour table %s cannot be read (%s); atoms are drawn in one colour.", path, error)
        return {}
    return {symbol: tuple(channel / 255.0 for channel in rgb) for symbol, rgb in table.items()}


@functools.lru_cache(maxsize=1)
def _covalent_radii() -> dict[str, float]:
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    return dict(CovalentRadius.radius)


def element_colour(symbol: str) -> tuple[float, float, float]:
    """Jmol colour of an element symbol, RGB in 0–1."""
    return _jmol_colours().get(symbol, FALLBACK_COLOUR)


def covalent_radius(symbol: str) -> float:
    """Covalent radius (Å) of an element symbol (Cordero et al. 2008, via pymatgen)."""
    return float(_covalent_radii().get(symbol, FALLBACK_RADIUS))


@functools.lru_cache(maxsize=256)
def is_metal(symbol: str) -> bool:
    """True for metals (pymatgen's definition); unknown symbols count as non-metals."""
    from pymatgen.core import Element

    try:
        return bool(Element(symbol).is_metal)
    except ValueError:
        return False
