"""Periodic voxel representation of any ordered crystal, for the all-crystal-system generator.

ICSG3D (Court et al., JCIM 2020) voxelises a cubic conventional cell seen through a window
with a vacuum margin; that only works when the cell is a cube. Here the grid lives in the
*fractional* coordinates of the cell itself, so any lattice gives a periodic ``G³`` grid with
no margin, and the lattice is carried separately as six numbers.

Standard cell (one crystal, one map)
    The primitive standard cell of spglib (via pymatgen's ``SpacegroupAnalyzer``), then
    Niggli-reduced (pymatgen ``Lattice.get_niggli_reduced_lattice``), so a ≤ b ≤ c and the
    angles are all acute or all obtuse. The origin is moved onto a site of the heaviest element
    (the first such site in pymatgen's order), which puts a density peak on voxel (0, 0, 0).

Grid
    Voxel ``(i, j, k)`` sits at the fractional point ``(i, j, k) / G`` (``G`` = :data:`GRID`).
    The grid is periodic: voxel ``G`` is voxel ``0``.

Density channel
    ``M_v = Σ_i Σ_images exp(-|r_v - r_i - T|² / 2σ²)`` with Cartesian distances (Å), one
    Gaussian of fixed width ``σ =`` :data:`SIGMA` Å and unit height per atom. A fixed, narrow σ
    (unlike ICSG3D's ionic radii) keeps every atom a separate maximum down to ~0.9 Å apart, so
    peak finding locates the sites; the species channel says what they are.

Species channel
    The atomic number of the atom that contributes most to each voxel where ``M ≥``
    :data:`SPECIES_THRESHOLD`, else 0.

Lattice
    Six parameters ``(ln a, ln b, ln c, cos α, cos β, cos γ)`` (Å, dimensionless), see
    :func:`lattice_to_params` / :func:`params_to_lattice`.

Decoding (:func:`decode_sites`, :func:`structure_from_maps`)
    Periodic peak finding (``scipy.ndimage.maximum_filter`` with ``mode='wrap'``), sub-voxel
    refinement by the density-weighted centroid of the 3×3×3 neighbourhood (periodic), merging of
    peaks closer than :data:`MERGE_DISTANCE` Å, species from the species channel (or the model's
    species logits) at each peak, and the lattice from the six parameters.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Element, Lattice, Structure

from app.engine.core.errors import StructureReadError
from app.engine.generation.density import require_ordered_atoms

logger = logging.getLogger(__name__)

#: Voxels per cell axis.
GRID = 24
#: Largest standard (primitive, Niggli-reduced) cell accepted, in sites.
MAX_SITES = 20
#: Gaussian width of every atom (Å).
SIGMA = 0.4
#: Gaussians are summed out to this many σ (exp(-3.5²/2) ≈ 2e-3 of the peak).
CUTOFF_SIGMAS = 3.5
#: Voxels with at least this density carry a species label.
SPECIES_THRESHOLD = 0.2
#: Maxima lower than this (unit-height Gaussians) are not atoms. Decoded maps have lower,
#: wider peaks than true ones (0.4–0.8); 0.3 gave the most matches on training cells of the
#: trained model (0.2–0.5 tried), and true maps decode the same at 0.3 and 0.5.
PEAK_THRESHOLD = 0.3
#: Peaks closer than this (Å, periodic) are one atom.
MERGE_DISTANCE = 0.6
#: Longest cell edge accepted (Å): beyond it one voxel would exceed ~σ·1.5.
MAX_LENGTH = 20.0

#: Element descriptors the encoder reads per voxel (Z/100, period/7, group/18, χ/4).
N_SPECIES_FEATURES = 4


# --------------------------------------------------------------------------------------------
# Standard cell
# --------------------------------------------------------------------------------------------

def primitive_cell(structure: Structure, symprec: float = 0.01) -> Structure:
    """spglib's primitive standard cell (one ``standardize_cell`` call), or the structure itself
    when spglib finds none or a larger one."""
    import spglib

    numbers = [site.specie.Z for site in structure]
    cell = (structure.lattice.matrix, structure.frac_coords, numbers)
    try:
        found = spglib.standardize_cell(cell, to_primitive=True, no_idealize=False, symprec=symprec)
    except Exception:  # spglib raises various errors on odd cells; keep the cell as given
        found = None
    if found is None or len(found[2]) > len(structure):
        return structure
    lattice, positions, types = found
    return Structure(Lattice(lattice), [int(z) for z in types], positions)


def crystal_system(structure: Structure, symprec: float = 0.1) -> str:
    """Crystal system ("cubic", "hexagonal", …) of a structure, "unknown" if spglib finds none."""
    import spglib

    try:
        dataset = spglib.get_symmetry_dataset((structure.lattice.matrix, structure.frac_coords,
                                               [site.specie.Z for site in structure]), symprec=symprec)
    except Exception:  # spglib raises various errors on odd cells
        dataset = None
    if dataset is None:
        return "unknown"
    number = dataset.number
    for bound, name in ((2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal"),
                        (167, "trigonal"), (194, "hexagonal"), (230, "cubic")):
        if number <= bound:
            return name
    return "unknown"


def standard_cell(structure: Structure, max_sites: int = MAX_SITES) -> Structure:
    """Primitive, Niggli-reduced cell with a heaviest-element site at the origin.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        Any ordered crystal.
    max_sites : int
        Largest accepted number of sites of the reduced cell.

    Returns
    -------
    pymatgen.core.Structure
        The standard cell, fractional coordinates in [0, 1).

    Raises
    ------
    StructureReadError
        If the structure is empty or disordered, or its primitive cell has more than
        ``max_sites`` sites or an edge longer than :data:`MAX_LENGTH` Å.
    """
    require_ordered_atoms(structure)
    primitive = primitive_cell(structure)
    if len(primitive) > max_sites:
        raise StructureReadError(
            f"{structure.composition.reduced_formula}: the primitive cell has {len(primitive)} sites; "
            f"the generator handles at most {max_sites}.")
    reduced = primitive.get_reduced_structure("niggli")
    heaviest = max(range(len(reduced)), key=lambda i: (reduced[i].specie.Z, -i))
    frac = np.mod(reduced.frac_coords - reduced.frac_coords[heaviest], 1.0)
    frac[np.isclose(frac, 1.0, atol=1e-8)] = 0.0
    cell = Structure(reduced.lattice, [site.specie for site in reduced], frac)
    if max(cell.lattice.abc) > MAX_LENGTH:
        raise StructureReadError(
            f"{structure.composition.reduced_formula}: the reduced cell has an edge of "
            f"{max(cell.lattice.abc):.1f} Å; the generator handles at most {MAX_LENGTH:.0f} Å.")
    return cell


# --------------------------------------------------------------------------------------------
# Lattice parameters
# --------------------------------------------------------------------------------------------

def lattice_to_params(lattice: Lattice) -> np.ndarray:
    """``(ln a, ln b, ln c, cos α, cos β, cos γ)``, shape ``(6,)``, float32 (lengths in Å)."""
    a, b, c = lattice.abc
    angles = np.radians(lattice.angles)
    return np.array([math.log(a), math.log(b), math.log(c), *np.cos(angles)], dtype=np.float32)


def params_to_lattice(params) -> Lattice:
    """Inverse of :func:`lattice_to_params` (cosines clipped to a valid cell).

    Parameters
    ----------
    params : array-like
        Shape ``(6,)``.

    Returns
    -------
    pymatgen.core.Lattice
    """
    params = np.asarray(params, dtype=np.float64)
    lengths = np.exp(params[:3])
    cosines = np.clip(params[3:], -0.95, 0.95)
    angles = np.degrees(np.arccos(cosines))
    # A set of three angles is a cell only if the metric tensor stays positive definite.
    for _ in range(20):
        ca, cb, cg = np.cos(np.radians(angles))
        if 1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg > 1e-3:
            break
        angles = 90.0 + 0.8 * (angles - 90.0)
    return Lattice.from_parameters(*lengths, *angles)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

@dataclass
class PeriodicMaps:
    """A crystal in the periodic representation.

    Attributes
    ----------
    structure : pymatgen.core.Structure
        The standard cell the maps were made from.
    density : numpy.ndarray
        Shape ``(G, G, G)``, float32, sum of unit Gaussians (dimensionless).
    species : numpy.ndarray
        Shape ``(G, G, G)``, uint8 atomic numbers (0 = no atom).
    lattice : numpy.ndarray
        Shape ``(6,)``, see :func:`lattice_to_params`.
    """

    structure: Structure
    density: np.ndarray
    species: np.ndarray
    lattice: np.ndarray


def _local_offsets(lattice: Lattice, grid: int, radius: float) -> np.ndarray:
    """Integer voxel offsets of the box that encloses a sphere of ``radius`` Å, ``(n, 3)``."""
    reciprocal = np.linalg.inv(lattice.matrix).T  # rows: reciprocal vectors without 2π (1/Å)
    half = np.ceil(radius * np.linalg.norm(reciprocal, axis=1) * grid).astype(int) + 1
    ranges = [np.arange(-h, h + 1) for h in half]
    return np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)


def gaussian_maps(lattice: Lattice, frac_coords: np.ndarray, numbers: np.ndarray, grid: int = GRID,
                  sigma: float = SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Density and species maps of sites in a periodic cell.

    Each site's Gaussian is evaluated on the voxels of a local box (unwrapped fractional
    offsets around the site), so periodic images are the wrapped copies of the box; where a
    box is wider than the cell, its wrapped voxels repeat and each repeat is one more image.

    Parameters
    ----------
    lattice : pymatgen.core.Lattice
    frac_coords : numpy.ndarray
        Shape ``(n_sites, 3)``.
    numbers : numpy.ndarray
        Shape ``(n_sites,)``, atomic numbers.
    grid : int
        Voxels per axis.
    sigma : float
        Gaussian width (Å).

    Returns
    -------
    density : numpy.ndarray
        ``(grid, grid, grid)``, float32.
    species : numpy.ndarray
        ``(grid, grid, grid)``, uint8.
    """
    frac_coords = np.asarray(frac_coords, dtype=np.float64)
    numbers = np.asarray(numbers, dtype=np.int64)
    offsets = _local_offsets(lattice, grid, CUTOFF_SIGMAS * sigma)
    centre = np.round(frac_coords * grid).astype(np.int64)  # (S, 3)
    index = centre[:, None, :] + offsets[None, :, :]  # (S, N, 3)
    delta = index / grid - frac_coords[:, None, :]
    cart = delta @ lattice.matrix  # (S, N, 3) Å
    weight = np.exp(-np.einsum("snk,snk->sn", cart, cart) / (2.0 * sigma**2))
    wrapped = np.mod(index, grid)
    flat = (wrapped[..., 0] * grid + wrapped[..., 1]) * grid + wrapped[..., 2]  # (S, N)
    size = grid**3
    elements = np.unique(numbers)
    per_element = np.stack([np.bincount(flat[numbers == z].ravel(), weights=weight[numbers == z].ravel(),
                                        minlength=size) for z in elements])
    density = per_element.sum(axis=0)
    species = np.where(density >= SPECIES_THRESHOLD, elements[per_element.argmax(axis=0)], 0)
    return (density.reshape(grid, grid, grid).astype(np.float32),
            species.reshape(grid, grid, grid).astype(np.uint8))


def encode(structure: Structure, grid: int = GRID, max_sites: int = MAX_SITES) -> PeriodicMaps:
    """Standard cell and its periodic maps.

    Raises
    ------
    StructureReadError
        See :func:`standard_cell`.
    """
    cell = standard_cell(structure, max_sites)
    numbers = np.array([site.specie.Z for site in cell])
    density, species = gaussian_maps(cell.lattice, cell.frac_coords, numbers, grid)
    return PeriodicMaps(cell, density, species, lattice_to_params(cell.lattice))


_FEATURE_TABLE: np.ndarray | None = None


def species_feature_table() -> np.ndarray:
    """Element descriptors by atomic number, shape ``(256, 4)``, float32; row 0 is zero.

    Columns: Z/100, period/7, group/18, Pauling electronegativity/4 (0 where unknown).
    """
    global _FEATURE_TABLE
    if _FEATURE_TABLE is None:
        table = np.zeros((256, N_SPECIES_FEATURES), dtype=np.float32)
        with warnings.catch_warnings():  # pymatgen warns for every element without a Pauling value
            warnings.simplefilter("ignore")
            for z in range(1, 119):
                element = Element.from_Z(z)
                chi = element.X if element.X == element.X else 0.0
                table[z] = (z / 100.0, element.row / 7.0, element.group / 18.0, chi / 4.0)
        _FEATURE_TABLE = table
    return _FEATURE_TABLE


def encoder_input(density: np.ndarray, species: np.ndarray) -> np.ndarray:
    """Network input of maps: density and the density-weighted element descriptors.

    Parameters
    ----------
    density : numpy.ndarray
        ``(..., G, G, G)``.
    species : numpy.ndarray
        ``(..., G, G, G)`` atomic numbers.

    Returns
    -------
    numpy.ndarray
        ``(..., 1 + N_SPECIES_FEATURES, G, G, G)``, float32.
    """
    density = np.asarray(density, dtype=np.float32)
    features = species_feature_table()[species.astype(np.int64)]  # (..., G, G, G, F)
    features = np.moveaxis(features, -1, -4) * density[..., None, :, :, :]
    return np.concatenate([density[..., None, :, :, :], features], axis=-4)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------

def find_peaks(density: np.ndarray, threshold: float = PEAK_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Periodic local maxima of a density map, refined to sub-voxel positions.

    Parameters
    ----------
    density : numpy.ndarray
        ``(G, G, G)``.
    threshold : float
        Lowest accepted maximum.

    Returns
    -------
    voxels : numpy.ndarray
        ``(n, 3)`` int, voxel index of each peak, strongest first.
    frac_coords : numpy.ndarray
        ``(n, 3)`` float64 in [0, 1): centroid of the 3×3×3 neighbourhood (periodic).
    """
    from scipy.ndimage import maximum_filter

    grid = density.shape[0]
    density = np.asarray(density, dtype=np.float32)
    is_peak = (density == maximum_filter(density, size=3, mode="wrap")) & (density >= threshold)
    voxels = np.argwhere(is_peak)
    if len(voxels) == 0:
        return voxels, np.zeros((0, 3))
    voxels = voxels[np.argsort(-density[tuple(voxels.T)], kind="stable")]
    shifts = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    neighbours = voxels[:, None, :] + shifts[None]  # (n, 27, 3)
    values = density[tuple(np.mod(neighbours, grid).transpose(2, 0, 1))]
    # Only the part above half the peak pulls the centroid, so a neighbour atom's tail does not.
    weights = np.clip(values - 0.5 * values[:, 13:14], 0.0, None)
    centroid = (weights[..., None] * neighbours).sum(1) / np.maximum(weights.sum(1, keepdims=True), 1e-12)
    return voxels, np.mod(centroid / grid, 1.0)


def merge_close_peaks(lattice: Lattice, voxels: np.ndarray, frac_coords: np.ndarray,
                      distance: float = MERGE_DISTANCE) -> np.ndarray:
    """Indices of the peaks to keep: a peak closer than ``distance`` Å to a stronger one is dropped."""
    if len(frac_coords) == 0:
        return np.zeros(0, dtype=int)
    distances = lattice.get_all_distances(frac_coords, frac_coords)
    keep: list[int] = []
    for i in range(len(frac_coords)):
        if all(distances[i, j] >= distance for j in keep):
            keep.append(i)
    return np.array(keep, dtype=int)


def _species_votes(species: np.ndarray, voxels: np.ndarray, vote: bool) -> np.ndarray:
    """Atomic number at each peak voxel, or (``vote``) the most common non-zero label of its
    3×3×3 neighbourhood (periodic; ties: the peak voxel's own label first)."""
    centre = species[tuple(voxels.T)].astype(int)
    if not vote:
        return centre
    grid = species.shape[0]
    shifts = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    labels = species[tuple(np.mod(voxels[:, None, :] + shifts[None], grid).transpose(2, 0, 1))].astype(int)
    out = centre.copy()
    for n, row in enumerate(labels):
        values, counts = np.unique(row[row > 0], return_counts=True)
        if len(values) and counts.max() > np.sum(row == centre[n]):
            out[n] = values[counts.argmax()]
    return out


def peak_sites(density: np.ndarray, lattice: Lattice, threshold: float = PEAK_THRESHOLD,
               max_sites: int = MAX_SITES * 2) -> tuple[np.ndarray, np.ndarray]:
    """Where the atoms of a (decoded) density map are, before their species are known.

    Periodic maxima of at least ``threshold`` (:func:`find_peaks`), without those closer than
    :data:`MERGE_DISTANCE` Å to a stronger one, at most ``max_sites`` (strongest first).

    Parameters
    ----------
    density : numpy.ndarray
        ``(G, G, G)``.
    lattice : pymatgen.core.Lattice
        Cell of the map.

    Returns
    -------
    voxels : numpy.ndarray
        ``(n, 3)`` int, voxel index of each site's peak.
    frac_coords : numpy.ndarray
        ``(n, 3)`` float64 in [0, 1).
    """
    voxels, frac = find_peaks(density, threshold)
    keep = merge_close_peaks(lattice, voxels, frac)[:max_sites]
    return voxels[keep], frac[keep]


def decode_sites(density: np.ndarray, species: np.ndarray, lattice: Lattice,
                 threshold: float = PEAK_THRESHOLD, max_sites: int = MAX_SITES * 2,
                 vote: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sites of a (decoded) density map.

    Parameters
    ----------
    density : numpy.ndarray
        ``(G, G, G)``.
    species : numpy.ndarray
        ``(G, G, G)`` atomic numbers, read at each peak voxel (0 there drops the peak).
    lattice : pymatgen.core.Lattice
        Cell of the map.
    threshold : float
        Lowest accepted peak.
    max_sites : int
        At most this many peaks (strongest first) are kept.
    vote : bool
        Species by majority of the peak's 3×3×3 neighbourhood instead of the peak voxel alone.

    Returns
    -------
    frac_coords : numpy.ndarray
        ``(n, 3)``.
    numbers : numpy.ndarray
        ``(n,)`` atomic numbers.
    """
    voxels, frac = peak_sites(density, lattice, threshold, max_sites)
    numbers = _species_votes(species, voxels, vote) if len(voxels) else np.zeros(0, dtype=int)
    atom = numbers > 0
    return frac[atom], numbers[atom]


def structure_from_sites(lattice: Lattice, frac_coords: np.ndarray, numbers: np.ndarray) -> Structure | None:
    """pymatgen ``Structure`` of sites (``(n, 3)`` fractional, ``(n,)`` atomic numbers; 0 drops a
    site), or None if no atom is left."""
    numbers = np.asarray(numbers)
    atom = numbers > 0
    if not atom.any():
        return None
    return Structure(lattice, [int(z) for z in numbers[atom]], np.asarray(frac_coords)[atom])


def structure_from_maps(density: np.ndarray, species: np.ndarray, lattice_params,
                        threshold: float | None = None, vote: bool = False) -> Structure | None:
    """pymatgen ``Structure`` of decoded maps and lattice parameters, or None if no atom is found.

    ``threshold``: lowest accepted peak (default :data:`PEAK_THRESHOLD`).
    """
    lattice = params_to_lattice(lattice_params)
    frac, numbers = decode_sites(density, species, lattice, PEAK_THRESHOLD if threshold is None else threshold,
                                 vote=vote)
    return structure_from_sites(lattice, frac, numbers)


def structure_matches(a: Structure, b: Structure, stol: float = 0.5, ltol: float = 0.3, angle_tol: float = 10.0) -> bool:
    """StructureMatcher equality with the generator's tolerances (CDVAE's reconstruction test)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    if a.composition.reduced_composition != b.composition.reduced_composition:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(StructureMatcher(stol=stol, ltol=ltol, angle_tol=angle_tol).fit(a, b))
