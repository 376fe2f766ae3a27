"""How elements look in the viewer: VESTA (or Jmol) colours, atomic/ionic/covalent radii (no Qt)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

#: Colour of elements missing from the colour table (RGB 0–1).
FALLBACK_COLOUR = (1.0, 0.08, 0.58)
#: Radius (Å) of elements missing from a radius table.
FALLBACK_RADIUS = 1.5
COLOUR_SCHEMES = ("VESTA", "Jmol")
#: Radius kinds the viewer offers: ``atomic`` (Slater's empirical atomic radius), ``ionic``
#: (pymatgen's average ionic radius over common oxidation states), ``covalent`` (Cordero 2008).
RADIUS_KINDS = ("atomic", "ionic", "covalent")


@functools.lru_cache(maxsize=2)
def _colour_table(scheme: str) -> dict[str, tuple[float, float, float]]:
    """pymatgen's copy of the VESTA/Jmol colour tables, as RGB in 0–1."""
    import pymatgen.vis
    from monty.serialization import loadfn

    path = Path(pymatgen.vis.__file__).with_name("ElementColorSchemes.yaml")
    try:
        table = loadfn(path)[scheme]
    except (OSError, KeyError, ValueError) as error:
        logger.warning("The %s colour table %s cannot be read (%s); atoms are drawn in one colour.", scheme, path,
                       error)
        return {}
    return {symbol: tuple(channel / 255.0 for channel in rgb) for symbol, rgb in table.items()}


@functools.lru_cache(maxsize=1)
def _covalent_radii() -> dict[str, float]:
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    return dict(CovalentRadius.radius)


def element_colour(symbol: str, scheme: str = "VESTA") -> tuple[float, float, float]:
    """Colour of an element symbol in ``scheme`` (``VESTA`` or ``Jmol``), RGB in 0–1."""
    return _colour_table(scheme).get(symbol, FALLBACK_COLOUR)


def covalent_radius(symbol: str) -> float:
    """Covalent radius (Å) of an element symbol (Cordero et al. 2008, via pymatgen)."""
    return float(_covalent_radii().get(symbol, FALLBACK_RADIUS))


@functools.lru_cache(maxsize=512)
def element_radius(symbol: str, kind: str = "atomic") -> float:
    """Radius (Å) of ``kind`` (one of :data:`RADIUS_KINDS`); falls back to the covalent radius."""
    if kind == "covalent":
        return covalent_radius(symbol)
    from pymatgen.core import Element

    try:
        element = Element(symbol)
        value = element.atomic_radius if kind == "atomic" else element.average_ionic_radius
    except (ValueError, AttributeError):
        value = None
    value = float(value) if value else 0.0
    return value if value > 0 else covalent_radius(symbol)


@functools.lru_cache(maxsize=256)
def is_metal(symbol: str) -> bool:
    """True for metals (pymatgen's definition); unknown symbols count as non-metals."""
    from pymatgen.core import Element

    try:
        return bool(Element(symbol).is_metal)
    except ValueError:
        return False
