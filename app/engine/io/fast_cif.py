"""A fast reader for plain CIF data blocks: gemmi's C++ CIF parser plus a numpy symmetry expansion.

pymatgen's ``CifParser`` tokenises the text in Python and expands the symmetry site by site
(about 3 ms of CPU for a 20-site CIF, most of the time ``crystal-designer predict`` spends per
file). For the blocks it understands, :func:`read_plain_cif_block` builds the *same* structure
as ``CifParser.from_str(text).parse_structures(primitive=False, on_error="raise")[0]``: the same
lattice (``Lattice.from_parameters``), species, labels and sites in the same order, coordinates
equal (exactly for P1 files; to rounding for other symmetry operations), and the same parser
notes, using pymatgen's own tolerances (1e-4 in fractional coordinates, both for merging
symmetry images and for rounding 0.3333/0.6667 to 1/3 and 2/3).

Everything else it declines (returns None) and the caller reads the block with pymatgen:
partial or unknown occupancies, two sites on one position (disorder), oxidation states,
magnetic CIFs, implicit hydrogens, type symbols that are not plain element symbols, noble gases
(pymatgen sorts sites without an electronegativity in an order of its own), Cartesian-only
positions, ``?``/``.`` placeholders, numbers in quotes, a missing or impossible cell, symmetry
given only as a space-group symbol or as one line, loops split over several tables, a formula
that disagrees with the sites, tag names in another letter case (pymatgen's keys are
case-sensitive), and expansions too large for the vectorised path. A block it declines is
never read differently; ``tests/test_fast_cif.py`` and ``benchmarks/fast_cif_check.py``
compare both readers.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache

import gemmi
import numpy as np
from pymatgen.core import Composition, Element, Lattice, Structure
from pymatgen.core.operations import SymmOp

logger = logging.getLogger(__name__)

#: pymatgen's ``CifParser`` defaults: ``site_tolerance`` (images closer than this in every
#: fractional coordinate, modulo 1, are one site) and ``frac_tolerance`` (relative distance to
#: 1/3 or 2/3 below which a coordinate is rounded to it).
SITE_TOLERANCE = 1e-4
FRAC_TOLERANCE = 1e-4
#: ``CifParser.check``'s relative stoichiometry tolerance.
COMPOSITION_TOLERANCE = 0.01
#: Largest (sites listed x symmetry operations x sites listed) comparison done in one array;
#: larger blocks go to pymatgen (about 100 MB of temporaries at this size).
MAX_COMPARISONS = 4_000_000

_CELL_TAGS = ("_cell_length_a", "_cell_length_b", "_cell_length_c",
              "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")
# Tried in this order, as CifParser.get_symops does.
_SYMOP_TAGS = ("_symmetry_equiv_pos_as_xyz", "_symmetry_equiv_pos_as_xyz_",
               "_space_group_symop_operation_xyz", "_space_group_symop_operation_xyz_")
_SITE_TAGS = ("_atom_site_label", "_atom_site_type_symbol",
              "_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z")
_OCCUPANCY_TAG = "_atom_site_occupancy"
# Tags that make pymatgen do more than the plain reading (magnetic CIFs, oxidation states,
# implicit hydrogens): their blocks go to pymatgen. Matched as substrings, as pymatgen does.
_DECLINED_TAG_PARTS = ("_space_group_magn", "_atom_site_moment", "_space_group_symop_magn",
                       "_atom_type_oxidation_number", "_atom_site_attached_hydrogens")
_FORMULA_TAGS = ("_chemical_formula_sum", "_chemical_formula_structural")
_PLAIN_SYMBOL = re.compile(r"[A-Z][a-z]?")
_UNCERTAINTY = re.compile(r"\(.+\)*")  # pymatgen's str2float: "0.1234(5)" -> "0.1234"
_IDEAL_FRACTIONS = (1 / 3, 2 / 3)


@dataclass(frozen=True)
class FastCifResult:
    """A structure read by the fast path.

    Attributes
    ----------
    structure : Structure
        As pymatgen's CifParser builds it (conventional cell, sorted by electronegativity).
    warnings : list of str
        The notes pymatgen's parser would have recorded (e.g. coordinates rounded to 1/3).
    """

    structure: Structure
    warnings: list[str]


class _Declined(Exception):
    """The block needs pymatgen's reader; the message says why (for the debug log)."""


def read_plain_cif_block(text: str, max_sites: int = 5_000) -> FastCifResult | None:
    """Read one CIF data block the way pymatgen does, or None when the block needs pymatgen.

    Parameters
    ----------
    text : str
        CIF text holding one data block.
    max_sites : int
        Blocks listing more sites, or whose expansion may exceed about ten times this, are left
        to the pymatgen path (which reports them).

    Returns
    -------
    FastCifResult or None
        None for every block this reader does not handle exactly as pymatgen does.
    """
    try:
        return _read(text, max_sites)
    except _Declined as reason:
        logger.debug("CIF block read with pymatgen: %s", reason)
        return None


def _read(text: str, max_sites: int) -> FastCifResult:
    pairs, loops = _items(text)
    if any(part in tag for tag in (*pairs, *loops) for part in _DECLINED_TAG_PARTS):
        raise _Declined("magnetic, oxidation-state or implicit-hydrogen tags")
    lattice = _lattice(pairs)
    rotations, translations = _symmetry_operations(pairs, loops)
    columns = _site_columns(loops)
    labels, symbols = columns["_atom_site_label"], columns["_atom_site_type_symbol"]
    n_listed = len(labels)
    if n_listed == 0 or n_listed > max_sites:
        raise _Declined(f"{n_listed} sites listed")
    if n_listed * len(rotations) // 48 > 10 * max_sites:
        raise _Declined("symmetry expansion too large")
    if n_listed * n_listed * len(rotations) > MAX_COMPARISONS:
        raise _Declined("too many sites x operations for the vectorised expansion")
    elements = [_element(symbol) for symbol in symbols]
    for label in labels:
        if not label.isascii() or label[0] in "'\";":
            raise _Declined(f"site label {label!r}")
    if _OCCUPANCY_TAG in columns and any(_number(v) != 1.0 for v in columns[_OCCUPANCY_TAG]):
        raise _Declined("occupancies other than 1")
    frac = np.array([[_number(v) for v in columns[tag]] for tag in _SITE_TAGS[2:]]).T  # (n_listed, 3)
    if not np.all(np.isfinite(frac)):
        raise _Declined("non-finite coordinates")
    warns: list[str] = []
    rounded = _round_to_ideal_fractions(frac)
    if rounded:
        warns.append(f"{rounded} fractional coordinates rounded to ideal values to avoid issues with "
                     "finite precision.")

    images = np.einsum("oij,nj->noi", rotations, frac) + translations[None]  # (n_listed, n_ops, 3)
    if _shares_a_position(images, frac):
        raise _Declined("two listed sites on one position (disorder)")
    wrapped = images - np.floor(images)

    species, coords, site_labels = [], [], []
    # CifParser groups sites by composition, expands and merges each group, then sorts the sites
    # by electronegativity (stable): elements in ascending order, each element's listed sites in
    # file order, each with its distinct images in the order of the operations.
    for element in sorted(set(elements)):
        rows = [i for i, e in enumerate(elements) if e == element]
        kept = _distinct_images(wrapped[rows])
        for row, ops in zip(rows, kept):
            coords.append(wrapped[row, ops])
            species += [_composition(element)] * len(ops)
            site_labels += [labels[row]] * len(ops)
    coords_array = np.concatenate(coords)
    _check_formula(pairs, elements, [c.elements[0] for c in species])
    structure = Structure(lattice, species, coords_array, labels=site_labels, site_properties={})
    return FastCifResult(structure, warns)


# --- the block's items --------------------------------------------------------------------------

def _items(text: str) -> tuple[dict[str, str], dict[str, tuple[gemmi.cif.Loop, int]]]:
    """Pair values and loop columns by exact tag (pymatgen's keys are case-sensitive)."""
    try:
        document = gemmi.cif.read_string(text)
    except (RuntimeError, ValueError) as error:  # syntax errors, duplicated tags
        raise _Declined(f"gemmi: {error}") from None
    if len(document) != 1:
        raise _Declined(f"{len(document)} data blocks")
    pairs: dict[str, str] = {}
    loops: dict[str, tuple[gemmi.cif.Loop, int]] = {}
    for item in document[0]:
        if item.pair is not None:
            tag, value = item.pair
            pairs[tag] = value
        elif item.loop is not None:
            for column, tag in enumerate(item.loop.tags):
                loops[tag] = (item.loop, column)
        else:
            raise _Declined("save frames")
    if set(pairs) & set(loops):
        raise _Declined("a tag given both as a pair and in a loop")
    return pairs, loops


def _number(raw: str) -> float:
    """A CIF number as pymatgen's ``str2float`` reads it; declines placeholders and quoted numbers."""
    try:
        return float(raw) if "(" not in raw else float(_UNCERTAINTY.sub("", raw))
    except ValueError:
        raise _Declined(f"not a plain number: {raw!r}") from None


def _lattice(pairs: dict[str, str]) -> Lattice:
    try:
        values = [_number(pairs[tag]) for tag in _CELL_TAGS]
    except KeyError as missing:
        raise _Declined(f"no {missing}") from None
    if not all(math.isfinite(v) and v > 0 for v in values) or not all(v < 180 for v in values[3:]):
        raise _Declined("impossible cell")
    lattice = Lattice.from_parameters(*values)
    # Lattice.d_hkl of (100), (010), (001): 1 / length of each reciprocal basis vector.
    spacings = 1 / np.linalg.norm(np.linalg.inv(lattice.matrix).T, axis=1)
    if np.any(spacings < 0.01):
        raise _Declined("cell thinner than pymatgen accepts")
    return lattice


def _symmetry_operations(pairs: dict[str, str], loops: dict) -> tuple[np.ndarray, np.ndarray]:
    """Rotations (n_ops, 3, 3) and translations (n_ops, 3) of the first listed symmetry loop."""
    for tag in _SYMOP_TAGS:
        if tag in pairs:
            raise _Declined("one-line symmetry operation")
        if tag in loops:
            loop, column = loops[tag]
            values = tuple(gemmi.cif.as_string(v) for v in loop.values[column::loop.width()])
            if not values:
                raise _Declined("empty symmetry loop")
            return _parsed_operations(values)
    raise _Declined("no symmetry operations listed (pymatgen derives them from the symbol)")


@lru_cache(maxsize=512)
def _parsed_operations(xyz: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    try:
        ops = [SymmOp.from_xyz_str(s) for s in xyz]
    except ValueError as error:
        raise _Declined(f"symmetry operation: {error}") from None
    rotations = np.array([op.rotation_matrix for op in ops])
    translations = np.array([op.translation_vector for op in ops])
    rotations.setflags(write=False)
    translations.setflags(write=False)
    return rotations, translations


def _site_columns(loops: dict) -> dict[str, list[str]]:
    """The atom-site columns, all from the one loop that holds ``_atom_site_fract_x``."""
    if "_atom_site_fract_x" not in loops:
        raise _Declined("no _atom_site_fract_x loop")
    loop, _ = loops["_atom_site_fract_x"]
    tags = [tag for tag in (*_SITE_TAGS, _OCCUPANCY_TAG) if tag in loops]
    if any(loops[tag][0] is not loop for tag in tags) or not set(_SITE_TAGS) <= set(tags):
        raise _Declined("atom-site columns missing or in separate loops")
    values, width = loop.values, loop.width()
    return {tag: values[loops[tag][1]::width] for tag in tags}


@lru_cache(maxsize=256)
def _element(symbol: str) -> Element:
    if not _PLAIN_SYMBOL.fullmatch(symbol) or not Element.is_valid_symbol(symbol):
        raise _Declined(f"type symbol {symbol!r}")
    element = Element(symbol)
    with warnings.catch_warnings():  # pymatgen warns when it has no electronegativity
        warnings.simplefilter("ignore")
        electronegativity = element.X
    if electronegativity != electronegativity:  # no electronegativity (noble gases): pymatgen's sort order differs
        raise _Declined(f"{symbol} has no electronegativity")
    return element


@lru_cache(maxsize=256)
def _composition(element: Element) -> Composition:
    """The species of a fully occupied site as CifParser makes it (amount 1.0; shared, as
    CifParser shares it between the images of a site)."""
    return Composition({element: 1.0})


# --- what CifParser does to the numbers ---------------------------------------------------------

def _round_to_ideal_fractions(frac: np.ndarray) -> int:
    """Round coordinates within ``FRAC_TOLERANCE`` (relative) of 1/3 or 2/3 in place; the count."""
    close = np.zeros(frac.shape, dtype=bool)
    for ideal in _IDEAL_FRACTIONS:
        near = np.abs(frac / ideal - 1) <= FRAC_TOLERANCE
        frac[near] = ideal
        close |= near
    return int(close.sum())


def _shares_a_position(images: np.ndarray, frac: np.ndarray) -> bool:
    """Whether an image of a listed site falls on an earlier listed site (CifParser merges those
    into one disordered site)."""
    n = len(frac)
    if n < 2:
        return False
    d = images[:, :, None, :] - frac[None, None, :, :]  # (n, ops, n, 3)
    d -= np.round(d)
    same = np.all(np.abs(d) < SITE_TOLERANCE, axis=-1).any(axis=1)  # (n, n): row i hits row j
    return bool(np.tril(same, k=-1).any())


def _distinct_images(images: np.ndarray) -> list[list[int]]:
    """Per listed site (rows of ``images``, shape (n, ops, 3), wrapped into [0, 1)), the operations
    whose image is kept: an image is dropped when it lies within ``SITE_TOLERANCE`` of one kept
    before it (earlier sites, earlier operations), as CifParser's ``_unique_coords`` does."""
    n, n_ops, _ = images.shape
    flat = images.reshape(n * n_ops, 3)
    d = flat[:, None, :] - flat[None, :, :]
    d -= np.round(d)
    close = np.all(np.abs(d) < SITE_TOLERANCE, axis=-1)
    if not np.tril(close, k=-1).any():  # nothing to merge (every P1 file)
        return [list(range(n_ops))] * n
    kept_flags = np.zeros(n * n_ops, dtype=bool)
    for i in range(n * n_ops):
        kept_flags[i] = not close[i, :i][kept_flags[:i]].any()
    return [list(np.flatnonzero(kept_flags[row * n_ops:(row + 1) * n_ops])) for row in range(n)]


def _check_formula(pairs: dict[str, str], elements: list[Element], species: list[Element]) -> None:
    """CifParser.check: the formula of the block must name the same elements in the same ratios
    (otherwise pymatgen warns, and the block goes to pymatgen for that warning)."""
    raw = next((pairs[tag] for tag in _FORMULA_TAGS if tag in pairs and gemmi.cif.as_string(pairs[tag])), None)
    if raw is None:  # pymatgen compares with the listed type symbols: always the same elements here
        return
    if gemmi.cif.is_null(raw) or raw[0] == ";":
        raise _Declined("formula placeholder or text field")
    try:
        given = Composition(gemmi.cif.as_string(raw)).remove_charges().as_dict()
    except Exception:  # pymatgen: "Cannot determine chemical composition from CIF!"
        raise _Declined("unreadable formula") from None
    counts: dict[str, float] = {}
    for element in species:
        counts[element.symbol] = counts.get(element.symbol, 0.0) + 1.0
    if set(given) != set(counts):
        raise _Declined("formula names other elements")
    if any(counts[e] - given[e] != 0 for e in given):
        ratios = [counts[e] / given[e] for e in given]
        if max(ratios) - min(ratios) >= COMPOSITION_TOLERANCE:
            raise _Declined("formula in other ratios")
