"""Voxel representation of a cubic crystal (ICSG3D, Court et al. JCIM 2020, eq. 1–3).

A conventional cubic cell (≤ :data:`MAX_SITES` sites) is seen through a cubic window, the
*box*, that spans ``[-BOX_MARGIN·L, (1 + BOX_MARGIN)·L)`` along each axis (``L`` = a, b, c),
sampled at the centres of ``GRID`` voxels per axis. Voxel ``k`` (0-based) along an axis sits at
the fractional coordinate

    u_k = -BOX_MARGIN + (k + 1/2) · (1 + 2·BOX_MARGIN) / GRID,

i.e. at ``u_k · L`` Å. Three maps are made:

* density ``M`` (eq. 1): ``M_v = (2π)^-3/2 Σ_i Z_i / r_i³ · exp(-d(i, v)² / 2 r_i²)``, with
  ``r_i`` the ionic radius of site ``i`` (:func:`site_radii`);
* species ``S`` (eq. 2): the atomic number of the nearest site whose distance to the voxel
  centre is at most its radius ``r_i``, else 0 (``S > 0`` is the mask ``S_B`` of eq. 3);
* coordinates ``C``: the x, y, z position (Å) of each voxel centre (CoordConv).

Design choice — periodic images. Unlike the reference code (one copy of the cell in vacuum),
the sums in ``M`` and ``S`` run over *all periodic images* of the sites, so the box shows the
infinite crystal through a window: an atom near a face appears, complete, a second time in the
margin on the opposite side, and the margin never holds half-missing neighbours. This makes
the maps translation-consistent and gives the segmentation two consistent copies of face
atoms to merge (see :mod:`app.engine.generation.segmentation`). Because the lattice is orthogonal, the
image sum of each Gaussian factorises into three 1-D periodic sums, so a whole map costs one
``(G, S) @ (S, G²)`` matrix product.

Note on contrast: with σ = r_i (1–2 Å for anions) the Gaussians overlap strongly, so the
density never approaches zero inside a crystal (minimum over the box 0.1–3.8 Z/Å³ for the
crystals tested, against maxima 0.3–12) and large light anions (Cl⁻ in NaCl, O²⁻ in SrTiO3)
sit at saddles of ``M``, not at maxima. The species map, not the density, locates atoms.

The network input (:func:`model_input`) rescales the channels to O(1) with fixed constants
(:data:`DENSITY_SCALE`, :data:`COORD_SCALE`); :func:`density_from_model` and
:func:`lattice_from_coords` invert them.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from pymatgen.core import Element, Lattice, Species, Structure

from app.engine.core.errors import StructureReadError

logger = logging.getLogger(__name__)

#: Voxels per axis.
GRID = 32
#: The box extends this fraction of the cell beyond each face (reference: 0.25).
BOX_MARGIN = 0.25
#: Box length over cell length: ``1 + 2·BOX_MARGIN`` (the one place this formula is written).
BOX_SPAN = 1.0 + 2.0 * BOX_MARGIN
#: Largest conventional cell accepted (paper's scope).
MAX_SITES = 40

#: Radius clamp (Å) and last-resort radius (Å), see :func:`site_radii`.
MIN_RADIUS = 0.3
MAX_RADIUS = 2.5
DEFAULT_RADIUS = 1.2

#: Density channel of the network input is ``log1p(M) / DENSITY_SCALE``. Map maxima measured
#: from 0.3 Z/Å³ (Li metal) to 12 (Ba2MgWO6, small W⁶⁺), ~1 for alkali halides; log1p compresses
#: that range and dividing by 2 puts the channel maxima in [0.12, 1.3] (channel means 0.07–0.9).
DENSITY_SCALE = 2.0
#: Coordinate channels of the network input are positions in Å divided by this length (Å), so a
#: 3–10 Å cell gives values in ~[-2.5, 12.5] / 10 = [-0.25, 1.25].
COORD_SCALE = 10.0

#: Gaussian tails are summed out to this many radii; exp(-6²/2) ≈ 1.5e-8 of the peak.
_TAIL_SIGMAS = 6.0
_GAUSS_PREFACTOR = (2.0 * math.pi) ** -1.5

_CUBIC_LENGTH_RTOL = 1e-3
_CUBIC_ANGLE_TOL = 1e-2  # degrees


# --------------------------------------------------------------------------------------------
# Box geometry
# --------------------------------------------------------------------------------------------

def box_fractions(grid: int = GRID) -> np.ndarray:
    """Fractional coordinate of each voxel centre along one axis.

    Parameters
    ----------
    grid : int
        Voxels per axis.

    Returns
    -------
    numpy.ndarray
        Shape ``(grid,)``, float64: ``u_k = -BOX_MARGIN + (k + 0.5)·(1 + 2·BOX_MARGIN)/grid``,
        in units of the cell length along that axis.
    """
    return -BOX_MARGIN + (np.arange(grid, dtype=np.float64) + 0.5) * BOX_SPAN / grid


def voxel_size(length, grid: int = GRID):
    """Edge (Å) of one voxel along an axis of cell length ``length`` (Å).

    A float for a float; for an array of lengths, a float32 array of the same shape.
    """
    if np.ndim(length):
        return np.asarray(length, dtype=np.float32) * BOX_SPAN / grid
    return float(length) * BOX_SPAN / grid


def coordinate_grid(lattice_abc: Sequence[float], grid: int = GRID) -> np.ndarray:
    """Cartesian position (Å) of every voxel centre.

    Parameters
    ----------
    lattice_abc : sequence of 3 float
        Cell lengths a, b, c (Å) of the orthogonal cell.
    grid : int
        Voxels per axis.

    Returns
    -------
    numpy.ndarray
        Shape ``(3, grid, grid, grid)``, float32; channel ``c`` varies along array axis ``c``.
    """
    u = box_fractions(grid)
    coords = np.empty((3, grid, grid, grid), dtype=np.float32)
    coords[0] = (u * lattice_abc[0])[:, None, None]
    coords[1] = (u * lattice_abc[1])[None, :, None]
    coords[2] = (u * lattice_abc[2])[None, None, :]
    return coords


# --------------------------------------------------------------------------------------------
# Cell and radii
# --------------------------------------------------------------------------------------------

def require_ordered_atoms(structure: Structure) -> None:
    """Raise StructureReadError unless the structure has atoms and one element per site."""
    if len(structure) == 0:
        raise StructureReadError("The structure has no atoms.")
    if not structure.is_ordered:
        raise StructureReadError(
            "The structure has partially occupied (disordered) sites; the density representation "
            "needs one element per site.")


def conventional_cubic_cell(structure: Structure) -> Structure:
    """Standard conventional cell of ``structure``, checked to fit the representation.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        Any ordered crystal.

    Returns
    -------
    pymatgen.core.Structure
        ``SpacegroupAnalyzer(structure).get_conventional_standard_structure()``.

    Raises
    ------
    StructureReadError
        If the structure is disordered, its symmetry cannot be analysed, its conventional
        cell is not cubic (a = b = c within 0.1 %, angles 90°), or it has more than
        :data:`MAX_SITES` sites.
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    require_ordered_atoms(structure)
    try:
        conventional = SpacegroupAnalyzer(structure).get_conventional_standard_structure()
    except Exception as exc:  # spglib failures surface as various exception types
        raise StructureReadError(f"The crystal symmetry could not be analysed: {exc}") from exc
    _check_cubic(conventional)
    return conventional


def _check_cubic(structure: Structure) -> None:
    a, b, c = structure.lattice.abc
    angles = structure.lattice.angles
    if (abs(a - b) > _CUBIC_LENGTH_RTOL * a or abs(a - c) > _CUBIC_LENGTH_RTOL * a
            or any(abs(angle - 90.0) > _CUBIC_ANGLE_TOL for angle in angles)):
        raise StructureReadError(
            f"{structure.composition.reduced_formula}: the conventional cell is not cubic "
            f"(a, b, c = {a:.3f}, {b:.3f}, {c:.3f} Å; angles {angles[0]:.1f}°, {angles[1]:.1f}°, "
            f"{angles[2]:.1f}°). The generator only handles cubic crystals.")
    if len(structure) > MAX_SITES:
        raise StructureReadError(
            f"{structure.composition.reduced_formula}: the conventional cell has {len(structure)} "
            f"sites; the generator handles at most {MAX_SITES}.")


@functools.lru_cache(maxsize=4096)
def _guess_oxidation_states(reduced_formula: str) -> tuple[tuple[str, float], ...] | None:
    """Most likely oxidation state per element of a composition, or None if none is found.

    Cached because pymatgen's guess enumerates charge-balanced combinations (slow for some
    compositions); the reduced formula determines the answer.
    """
    from pymatgen.core import Composition

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            guesses = Composition(reduced_formula).oxi_state_guesses(max_sites=-1)
    except Exception as exc:  # pymatgen raises ValueError and others for odd compositions
        logger.debug("No oxidation-state guess for %s: %s", reduced_formula, exc)
        return None
    if not guesses:
        return None
    return tuple(sorted((str(el), float(oxi)) for el, oxi in guesses[0].items()))


def _ionic_radius(symbol: str, oxidation_state: float) -> float | None:
    """Ionic radius (Å) of ``symbol`` in an (possibly mixed-valence, non-integer) state."""
    states = ([int(round(oxidation_state))] if abs(oxidation_state - round(oxidation_state)) < 1e-6
              else [math.floor(oxidation_state), math.ceil(oxidation_state)])
    radii = []
    for state in states:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                radius = Species(symbol, state).ionic_radius
        except Exception:  # unknown state
            radius = None
        if radius:
            radii.append(float(radius))
    return float(np.mean(radii)) if len(radii) == len(states) else None


@functools.lru_cache(maxsize=256)
def element_fallback_radius(symbol: str) -> float:
    """Radius (Å) of an element whose oxidation state is unknown (unclamped).

    Chain: mean ionic radius over the element's common oxidation states that have one, else
    ``Element.average_ionic_radius`` (all states) if non-zero, else ``Element.atomic_radius``,
    else :data:`DEFAULT_RADIUS`.
    """
    element = Element(symbol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        radii = [r for r in (_ionic_radius(symbol, s) for s in element.common_oxidation_states) if r]
        if radii:
            return float(np.mean(radii))
        average = element.average_ionic_radius
        if average and float(average) > 0:
            return float(average)
        atomic = element.atomic_radius
        if atomic and float(atomic) > 0:
            return float(atomic)
    return DEFAULT_RADIUS


def site_radii(structure: Structure) -> np.ndarray:
    """Radius (Å) of the Gaussian of each site: the ionic radius of its likely oxidation state.

    Oxidation state of a site, first found of:

    1. the state the structure already carries (``Species`` with ``oxi_state``);
    2. the most likely charge-balanced guess of pymatgen,
       ``composition.oxi_state_guesses(max_sites=-1)[0]`` (cached per reduced formula;
       measured 0.1–0.3 ms per formula after a one-off ~150 ms table load, so the slower,
       structure-dependent ``BVAnalyzer`` is not used).

    Radius: ``Species(element, state).ionic_radius`` (pymatgen's Shannon radii; mixed valence
    averages the neighbouring integer states). If there is no state (intermetallics have no
    charge-balanced guess) or no tabulated radius, fall back, in order, to

    3. the mean ionic radius over the element's common oxidation states,
       else ``Element.average_ionic_radius`` (all states), used only if non-zero;
    4. ``Element.atomic_radius``;
    5. :data:`DEFAULT_RADIUS` (1.2 Å).

    Radii are clamped to [:data:`MIN_RADIUS`, :data:`MAX_RADIUS`] = [0.3, 2.5] Å so that no
    Gaussian degenerates to a spike or swamps the cell. (The reference code averaged radii over
    all oxidation states, giving chloride 0.78 Å instead of ~1.67 Å.)

    Parameters
    ----------
    structure : pymatgen.core.Structure
        Ordered structure.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_sites,)``, float64, Å.
    """
    symbols, states = [], []
    for site in structure:
        specie = site.specie
        symbols.append(specie.symbol if isinstance(specie, (Element, Species)) else str(specie))
        states.append(getattr(specie, "oxi_state", None))
    return element_radii(symbols, states)


def element_radii(symbols: Sequence[str], oxidation_states: Sequence[float | None] | None = None) -> np.ndarray:
    """Radius (Å) of each atom of a composition, by the rules of :func:`site_radii`.

    Parameters
    ----------
    symbols : sequence of str
        Element of each atom; together they are the composition whose oxidation states are
        guessed.
    oxidation_states : sequence of float or None, optional
        Known state of each atom (None: guess it).

    Returns
    -------
    numpy.ndarray
        Shape ``(len(symbols),)``, float64, Å, clamped to [:data:`MIN_RADIUS`, :data:`MAX_RADIUS`].
    """
    from collections import Counter

    from pymatgen.core import Composition

    states = list(oxidation_states) if oxidation_states is not None else [None] * len(symbols)
    formula = Composition(Counter(symbols)).reduced_formula if symbols else ""
    guess = None
    fallbacks: set[str] = set()
    radii = np.empty(len(symbols), dtype=np.float64)
    for i, (symbol, oxidation) in enumerate(zip(symbols, states)):
        if oxidation is None:
            if guess is None:
                guess = dict(_guess_oxidation_states(formula) or ())
            oxidation = guess.get(symbol)
        radius = _ionic_radius(symbol, oxidation) if oxidation is not None else None
        if radius is None:
            radius = element_fallback_radius(symbol)
            fallbacks.add(symbol)
        radii[i] = radius
    if fallbacks:
        logger.debug("%s: no oxidation-state ionic radius for %s, element fallback used",
                     formula, ", ".join(sorted(fallbacks)))
    return np.clip(radii, MIN_RADIUS, MAX_RADIUS)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EncodedCrystal:
    """Voxel maps of one crystal.

    Attributes
    ----------
    density : numpy.ndarray
        Shape ``(G, G, G)``, float32: electron-density proxy ``M`` (eq. 1), units Z/Å³.
    species : numpy.ndarray
        Shape ``(G, G, G)``, int16: atomic number of the nearest site within its radius, else 0.
    coords : numpy.ndarray
        Shape ``(3, G, G, G)``, float32, Å: x, y, z of each voxel centre; channel ``c`` increases
        along array axis ``c``.
    lattice_abc : numpy.ndarray
        Shape ``(3,)``, float64, Å: cell lengths along array axes 0, 1, 2.
    structure : pymatgen.core.Structure
        The conventional cell the maps show, in the same orientation as the maps.
    """

    density: np.ndarray
    species: np.ndarray
    coords: np.ndarray
    lattice_abc: np.ndarray
    structure: Structure


def _axis_profiles(fractions: np.ndarray, radii: np.ndarray, length: float, grid: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Periodic 1-D Gaussian sums and nearest-image squared distances along one axis.

    Parameters
    ----------
    fractions : numpy.ndarray
        Shape ``(S,)``: fractional coordinate of each site along the axis.
    radii : numpy.ndarray
        Shape ``(S,)``, Å.
    length : float
        Cell length along the axis (Å).
    grid : int
        Voxels per axis.

    Returns
    -------
    gauss : numpy.ndarray
        Shape ``(S, grid)``: ``Σ_n exp(-(x_k - (f_s + n)·L)² / 2 r_s²)`` over all images n.
    nearest_sq : numpy.ndarray
        Shape ``(S, grid)``, Å²: squared distance along the axis to the nearest image.
    """
    x = box_fractions(grid) * length  # (G,)
    reach = _TAIL_SIGMAS * radii.max() / length
    shifts = np.arange(math.floor(-BOX_MARGIN - reach) - 1, math.ceil(1 + BOX_MARGIN + reach) + 1)
    centres = (fractions[:, None] + shifts[None, :]) * length  # (S, N)
    delta_sq = (x[None, None, :] - centres[:, :, None]) ** 2  # (S, N, G)
    gauss = np.exp(-delta_sq / (2.0 * radii[:, None, None] ** 2)).sum(axis=1)
    return gauss, delta_sq.min(axis=1)


def encode(structure: Structure, grid: int = GRID, rotation=None, standardize: bool = True
           ) -> EncodedCrystal:
    """Voxel maps (density, species, coordinates) of a cubic crystal.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        Ordered crystal whose conventional cell is cubic with ≤ :data:`MAX_SITES` sites.
    grid : int
        Voxels per axis (default :data:`GRID` = 32).
    rotation : None, int or array_like, optional
        Apply one of the 24 proper cube rotations afterwards: an index into
        :data:`CUBE_ROTATIONS` or a 3×3 signed permutation matrix with determinant +1.
    standardize : bool
        Convert to the conventional standard cell first (:func:`conventional_cubic_cell`).
        With False the cell is used as given (it must still be cubic and small enough); this
        skips the symmetry analysis for cells already standardised, e.g. in a dataset cache.

    Returns
    -------
    EncodedCrystal

    Raises
    ------
    StructureReadError
        If the structure does not fit the representation (see :func:`conventional_cubic_cell`).
    """
    if standardize:
        cell = conventional_cubic_cell(structure)
    else:
        if not structure.is_ordered:
            raise StructureReadError("The structure has partially occupied (disordered) sites.")
        _check_cubic(structure)
        cell = structure
    abc = np.asarray(cell.lattice.abc, dtype=np.float64)
    try:
        numbers = np.array([site.specie.Z for site in cell], dtype=np.int64)
    except AttributeError as exc:
        raise StructureReadError("The structure contains a site that is not a chemical element.") from exc
    radii = site_radii(cell)
    frac = np.mod(cell.frac_coords, 1.0)

    profiles = [_axis_profiles(frac[:, axis], radii, abc[axis], grid) for axis in range(3)]
    (gx, dx), (gy, dy), (gz, dz) = profiles

    # eq. 1 with all periodic images: separable, so M = Σ_s w_s gx_s ⊗ gy_s ⊗ gz_s.
    # einsum (not @): the product is tiny and multithreaded BLAS stalls on a busy machine.
    weights = _GAUSS_PREFACTOR * numbers / radii ** 3
    yz = (gy[:, :, None] * gz[:, None, :]).reshape(len(cell), grid * grid)
    density = np.einsum("si,sj->ij", weights[:, None] * gx, yz).reshape(grid, grid, grid).astype(np.float32)

    species = _species_map(numbers, radii, dx, dy, dz, grid)
    encoded = EncodedCrystal(density=density, species=species, coords=coordinate_grid(abc, grid),
                             lattice_abc=abc, structure=cell)
    if rotation is not None:
        encoded = rotate(encoded, rotation)
    return encoded


def _species_map(numbers: np.ndarray, radii: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                 dz: np.ndarray, grid: int) -> np.ndarray:
    """eq. 2: Z of the nearest site (over periodic images) within its radius, else 0.

    For an orthogonal lattice the nearest image minimises each axis separately, so the squared
    distance to site s is ``dx[s, i] + dy[s, j] + dz[s, k]``. Each site only touches the voxels
    whose per-axis distance is within its radius, so the work is done on that sub-block.
    """
    best = np.full((grid, grid, grid), np.inf, dtype=np.float64)
    species = np.zeros((grid, grid, grid), dtype=np.int16)
    for s in range(len(numbers)):
        r_sq = radii[s] ** 2
        ix, iy, iz = (np.flatnonzero(d[s] <= r_sq) for d in (dx, dy, dz))
        if not (ix.size and iy.size and iz.size):
            continue
        block = np.ix_(ix, iy, iz)
        dist_sq = dx[s, ix][:, None, None] + dy[s, iy][None, :, None] + dz[s, iz][None, None, :]
        current = best[block]
        closer = (dist_sq <= r_sq) & (dist_sq < current)
        best[block] = np.where(closer, dist_sq, current)
        species[block] = np.where(closer, numbers[s], species[block])
    return species


# --------------------------------------------------------------------------------------------
# 90° rotations and the other operations of the cube
# --------------------------------------------------------------------------------------------

# Training augmentation draws from all 48 operations of the cube (the 24 proper rotations, each
# with or without inversion), not only the 24 rotations: a reflected crystal is its mirror image
# (the enantiomer of a chiral one), a real crystal with the same composition, formation energy
# and properties, so reflected maps are as valid examples as rotated ones and double the
# variety seen; the shipped VAE and UNet were trained this way. ``encode(rotation=…)`` and
# :func:`rotate` keep to proper rotations, which leave a structure's handedness as it is.

def random_cube_operation(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, ...]]:
    """One of the 48 operations of the cube, uniformly: ``(axes, reversed axes)``.

    ``axes`` is a permutation of (0, 1, 2): new axis ``a`` is old axis ``axes[a]``; then the new
    axes in ``reversed axes`` are reversed. See :func:`apply_cube_operation`.
    """
    axes = tuple(int(a) for a in rng.permutation(3))
    flips = tuple(a for a in range(3) if rng.random() < 0.5)
    return axes, flips


def apply_cube_operation(volume: np.ndarray, axes: Sequence[int], flips: Sequence[int]) -> np.ndarray:
    """Transpose the last three axes of ``volume`` (shape ``(…, G, G, G)``) by ``axes``, then
    reverse the ``flips`` among them; returns a contiguous copy."""
    lead = volume.ndim - 3
    out = np.transpose(volume, list(range(lead)) + [lead + int(a) for a in axes])
    if flips:
        out = np.flip(out, axis=[lead + int(a) for a in flips])
    return np.ascontiguousarray(out)


def _proper_cube_rotations() -> tuple[np.ndarray, ...]:
    import itertools

    rotations = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            matrix = np.zeros((3, 3), dtype=np.int64)
            matrix[np.arange(3), perm] = signs
            if round(np.linalg.det(matrix)) == 1:
                rotations.append(matrix)
    return tuple(rotations)


#: The 24 proper rotations of the cube as 3×3 signed permutation matrices R (identity first):
#: the rotated map's axis ``a`` is the original axis ``perm[a]`` (the column of the non-zero in
#: row ``a``), reversed when that entry is −1; positions map as ``p' - centre' = R (p - centre)``
#: about the box centre.
CUBE_ROTATIONS: tuple[np.ndarray, ...] = _proper_cube_rotations()


def _as_rotation(rotation) -> tuple[tuple[int, ...], np.ndarray]:
    if isinstance(rotation, (int, np.integer)):
        if not 0 <= int(rotation) < len(CUBE_ROTATIONS):
            raise ValueError(f"rotation index must be in 0..{len(CUBE_ROTATIONS) - 1}, got {rotation}")
        matrix = CUBE_ROTATIONS[int(rotation)]
    else:
        matrix = np.asarray(rotation)
        if (matrix.shape != (3, 3) or not np.all(np.isin(matrix, (-1, 0, 1)))
                or not np.all(np.abs(matrix).sum(axis=0) == 1) or not np.all(np.abs(matrix).sum(axis=1) == 1)
                or round(np.linalg.det(matrix)) != 1):
            raise ValueError("rotation must be a 3×3 signed permutation matrix with determinant +1")
    perm = tuple(int(np.flatnonzero(row)[0]) for row in matrix)
    signs = np.array([matrix[a, perm[a]] for a in range(3)], dtype=np.int64)
    return perm, signs


def rotate(encoded: EncodedCrystal, rotation) -> EncodedCrystal:
    """Apply a proper 90° cube rotation to all maps, coordinates, lattice and structure.

    The coordinate channels are permuted with the axes and reflected (``x → L - x``) where an
    axis is reversed, so afterwards they still give each voxel's position and channel ``c``
    still increases along array axis ``c``; ``lattice_abc`` is permuted the same way.

    Parameters
    ----------
    encoded : EncodedCrystal
    rotation : int or array_like
        Index into :data:`CUBE_ROTATIONS` or a 3×3 signed permutation matrix, det +1.

    Returns
    -------
    EncodedCrystal
        New object; the input is not modified.
    """
    perm, signs = _as_rotation(rotation)
    flips = tuple(a for a in range(3) if signs[a] < 0)

    def spatial(volume: np.ndarray) -> np.ndarray:
        return apply_cube_operation(volume, perm, flips)

    abc = encoded.lattice_abc[list(perm)]
    coords = np.stack([spatial(encoded.coords[perm[a]]) for a in range(3)])
    for a in flips:
        # The box is symmetric about the cell centre, so reversing an axis maps x to L - x.
        coords[a] = np.float32(abc[a]) - coords[a]

    old = encoded.structure
    frac = old.frac_coords[:, list(perm)]
    frac[:, list(flips)] = 1.0 - frac[:, list(flips)]
    structure = Structure(Lattice.orthorhombic(*abc), old.species, np.mod(frac, 1.0),
                          site_properties=old.site_properties or None)
    return replace(encoded, density=spatial(encoded.density), species=spatial(encoded.species),
                   coords=coords, lattice_abc=abc, structure=structure)


# --------------------------------------------------------------------------------------------
# Network input and its inverse
# --------------------------------------------------------------------------------------------

def density_channel(density: np.ndarray) -> np.ndarray:
    """The density channel of the network input: ``log1p(M) / DENSITY_SCALE``, float32, any shape."""
    return (np.log1p(np.asarray(density, dtype=np.float32)) / DENSITY_SCALE).astype(np.float32)


def model_input(encoded: EncodedCrystal) -> np.ndarray:
    """Four-channel network input ``[log1p(M)/DENSITY_SCALE, x/COORD_SCALE, y/…, z/…]``.

    Parameters
    ----------
    encoded : EncodedCrystal

    Returns
    -------
    numpy.ndarray
        Shape ``(4, G, G, G)``, float32, dimensionless.
    """
    grid = encoded.density.shape[0]
    out = np.empty((4, grid, grid, grid), dtype=np.float32)
    out[0] = density_channel(encoded.density)
    out[1:] = encoded.coords / COORD_SCALE
    return out


def density_from_model(channel: np.ndarray) -> np.ndarray:
    """Invert the density channel of :func:`model_input`: ``M = expm1(DENSITY_SCALE·x)``, ≥ 0.

    Parameters
    ----------
    channel : numpy.ndarray
        Shape ``(G, G, G)``, model units.

    Returns
    -------
    numpy.ndarray
        Same shape, float32, Z/Å³.
    """
    return np.maximum(np.expm1(DENSITY_SCALE * np.asarray(channel, dtype=np.float64)), 0.0).astype(np.float32)


def lattice_from_coords(coords_channels: np.ndarray, scale: float = COORD_SCALE) -> np.ndarray:
    """Cell lengths a, b, c (Å) from the three coordinate channels.

    Channel ``c`` should be the ramp ``x_k = u_k · L_c / scale`` along array axis ``c``, with
    ``u_k`` from :func:`box_fractions`, whose slope per voxel is ``L_c (1 + 2·BOX_MARGIN) /
    (G · scale)``. The slope is fitted by least squares over every voxel (equivalently, over the
    channel averaged across the other two axes), so a noisy decoded channel still gives a good
    estimate and a constant offset does not matter; for an exact ramp the result is exact
    (no extra 1/G correction).

    Parameters
    ----------
    coords_channels : numpy.ndarray
        Shape ``(3, G, G, G)``, e.g. ``model_input(encoded)[1:]`` or a decoder output.
    scale : float
        Length (Å) the channels were divided by; 1.0 for channels in Å.

    Returns
    -------
    numpy.ndarray
        Shape ``(3,)``, float64, Å.
    """
    channels = np.asarray(coords_channels, dtype=np.float64)
    if channels.ndim != 4 or channels.shape[0] != 3:
        raise ValueError(f"coordinate channels must have shape (3, G, G, G), got {channels.shape}")
    grid = channels.shape[1]
    k = np.arange(grid, dtype=np.float64)
    k_centred = k - k.mean()
    abc = np.empty(3, dtype=np.float64)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        profile = channels[axis].mean(axis=other)
        slope = float(k_centred @ (profile - profile.mean()) / (k_centred @ k_centred))
        abc[axis] = slope * scale * grid / BOX_SPAN
    return abc


# --------------------------------------------------------------------------------------------
# Species features (encoder input)
# --------------------------------------------------------------------------------------------

#: Per-voxel element descriptors given to the VAE encoder where the species map is non-zero:
#: atomic number / 100, period / 7, group / 18, Pauling electronegativity / 4 (0 if unknown).
SPECIES_FEATURE_NAMES = ("Z/100", "period/7", "group/18", "electronegativity/4")
N_SPECIES_FEATURES = len(SPECIES_FEATURE_NAMES)


@functools.lru_cache(maxsize=1)
def species_feature_table() -> np.ndarray:
    """Descriptor rows indexed by atomic number; row 0 (no atom) is all zeros.

    Returns
    -------
    numpy.ndarray
        Shape ``(256, N_SPECIES_FEATURES)``, float32 (rows above Z = 118 are zero).
    """
    table = np.zeros((256, N_SPECIES_FEATURES), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z in range(1, 119):
            element = Element.from_Z(z)
            electronegativity = element.X if element.X and math.isfinite(element.X) else 0.0
            table[z] = (z / 100.0, element.row / 7.0, element.group / 18.0, electronegativity / 4.0)
    return table


def species_features(species: np.ndarray) -> np.ndarray:
    """Element descriptors of each voxel of a species map.

    Unlike the density of eq. 1, whose peak height and width (Z / r³, r) blur together where
    the Gaussians overlap, these channels tell the encoder unambiguously which element fills
    each voxel (ICSG3D's encoder sees the density only; see the VAE's model card).

    Parameters
    ----------
    species : numpy.ndarray
        Shape ``(..., G, G, G)``, integer atomic numbers (0 = no atom).

    Returns
    -------
    numpy.ndarray
        Shape ``(..., N_SPECIES_FEATURES, G, G, G)``, float32, dimensionless.
    """
    features = species_feature_table()[np.asarray(species, dtype=np.int64)]
    return np.moveaxis(features, -1, -4)
