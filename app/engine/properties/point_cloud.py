"""Crystals as point clouds for the PointNet property model (Okuno et al.).

Each atom of a standardised cell is one point: its Cartesian coordinates (Å) plus the CGCNN
feature vector of its element (:mod:`app.engine.core.elements`). The standardised cell is the
Niggli-reduced cell of the given cell, in the canonical orientation of its lattice parameters
(a along x, b in the xy plane), atoms wrapped into the cell and the cloud centred on its centroid.
(The given cell is first put into that orientation, so the reduction itself cannot depend on how the
input was rotated; a left-handed cell becomes its mirror image, which has the same properties.)
The cell is not made primitive (spglib costs more than the whole model; the training cells are
mostly primitive already). The canonical orientation makes the point cloud, and so the prediction,
independent of how the input crystal is rotated; training adds random rotations on top so that
the model and its T-Nets do not rely on one orientation.

A batch pads every cloud to the batch's largest one and carries a mask; the model max-pools
over real points only (a masked max-pool), which handles any number of atoms.

Besides the points, each crystal has a small rotation-invariant cell descriptor (lattice lengths,
cosines of the angles, volume per atom), appended to the pooled feature: the point cloud of one
cell alone does not tell the model the cell is periodic or how dense it is.

Each point can also carry a rotation-invariant description of its periodic surroundings (an
addition to the seed, :func:`environment_features`): a Gaussian-smeared histogram of the
distances to its 12 nearest periodic neighbours and the distance-weighted mean of those
neighbours' element features. The coordinates of one cell leave out the atoms just across the
cell faces, which are most of an atom's bonds; these features give them back without a graph
network (the model still treats each atom independently until the pooling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from app.engine.core.elements import FEATURE_LENGTH, MAX_Z, element_feature_table
from app.engine.core.errors import StructureReadError
from app.engine.properties.graph import require_predictable

#: Length of the cell descriptor: a, b, c (Å), cos α, cos β, cos γ, volume per atom (Å³).
CELL_DESCRIPTOR_LENGTH = 7
#: Neighbours per atom in the environment features (as the CGCNN graph).
ENVIRONMENT_NEIGHBORS = 12
#: Centres (Å) of the Gaussians of the neighbour-distance histogram.
DISTANCE_CENTRES = np.linspace(0.5, 6.5, 25, dtype=np.float32)
#: Width (Å) of those Gaussians.
DISTANCE_WIDTH = 0.25
#: Decay length (Å) of the weights of neighbours beyond the nearest in the neighbour-element mean.
NEIGHBOR_DECAY = 0.5
#: Length of :func:`environment_features` per atom.
ENVIRONMENT_LENGTH = len(DISTANCE_CENTRES) + FEATURE_LENGTH
#: Per-point input width of the seed's network: x, y, z plus the element features.
POINT_FEATURE_LENGTH = 3 + FEATURE_LENGTH
#: Per-point width with the environment features appended (what :func:`pad_batch` builds).
FULL_POINT_FEATURE_LENGTH = POINT_FEATURE_LENGTH + ENVIRONMENT_LENGTH


@dataclass(frozen=True)
class PointCloud:
    """Point cloud of one crystal.

    Attributes
    ----------
    atomic_numbers : numpy.ndarray
        Shape ``(n_atoms,)``, int16.
    coordinates : numpy.ndarray
        Shape ``(n_atoms, 3)``, float32, Å, centred on the centroid, canonical orientation.
    cell : numpy.ndarray
        Shape ``(CELL_DESCRIPTOR_LENGTH,)``, float32.
    neighbor_numbers : numpy.ndarray, optional
        Shape ``(n_atoms, ENVIRONMENT_NEIGHBORS)``, int16: atomic numbers of each atom's nearest
        periodic neighbours, 0 where fewer lie within the cutoff.
    neighbor_distances : numpy.ndarray, optional
        Same shape, float32, Å.
    """

    atomic_numbers: np.ndarray
    coordinates: np.ndarray
    cell: np.ndarray
    neighbor_numbers: np.ndarray | None = None
    neighbor_distances: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])


def canonical_lattice_matrix(a: float, b: float, c: float, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """Lattice matrix (rows = vectors, Å) with a along x and b in the xy plane; angles in degrees."""
    ca, cb, cg = (math.cos(math.radians(x)) for x in (alpha, beta, gamma))
    sg = math.sin(math.radians(gamma))
    cx = cb
    cy = (ca - cb * cg) / sg
    cz = math.sqrt(max(1.0 - cx * cx - cy * cy, 0.0))
    return np.array([[a, 0.0, 0.0], [b * cg, b * sg, 0.0], [c * cx, c * cy, c * cz]])


def point_cloud(structure) -> PointCloud:
    """Point cloud of an ordered pymatgen ``Structure`` in its standardised cell.

    Raises
    ------
    StructureReadError
        Empty, disordered, non-finite or degenerate structures, or elements beyond Z = 100.
    """
    require_predictable(structure)
    atomic_numbers = np.array([site.specie.Z for site in structure], dtype=np.int16)
    if atomic_numbers.max() > MAX_Z:
        raise StructureReadError(f"Elements beyond Z = {MAX_Z} have no feature vector.")
    from pymatgen.core import Lattice

    # Orient the cell canonically before reducing it: the reduction picks among equivalent cells by
    # Cartesian search order, so a rotated input could otherwise come back as another (sign-flipped) cell.
    oriented = canonical_lattice_matrix(*structure.lattice.parameters)
    cart = np.asarray(structure.frac_coords, dtype=np.float64) @ oriented
    try:
        reduced = Lattice(oriented).get_niggli_reduced_lattice()
    except Exception as error:  # pymatgen raises plain ValueError/RuntimeError on degenerate cells
        raise StructureReadError(f"The cell cannot be Niggli-reduced: {error}") from error
    fractional = np.linalg.solve(reduced.matrix.T, cart.T).T
    fractional -= np.floor(fractional)
    a, b, c = reduced.abc
    alpha, beta, gamma = reduced.angles
    coordinates = fractional @ canonical_lattice_matrix(a, b, c, alpha, beta, gamma)
    coordinates -= coordinates.mean(axis=0)
    cell = np.array(
        [a, b, c, *(math.cos(math.radians(x)) for x in (alpha, beta, gamma)), structure.volume / len(structure)],
        dtype=np.float32,
    )
    numbers, distances = nearest_neighbors(structure)
    return PointCloud(atomic_numbers, coordinates.astype(np.float32), cell, numbers, distances)


def nearest_neighbors(structure) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers and distances (Å) of each atom's ``ENVIRONMENT_NEIGHBORS`` nearest periodic
    neighbours, shapes ``(n_atoms, ENVIRONMENT_NEIGHBORS)`` (0 and the cutoff where there are fewer)."""
    from app.engine.properties.graph import build_graph

    graph = build_graph(structure, max_neighbors=ENVIRONMENT_NEIGHBORS)
    numbers = np.where(graph.neighbor_mask, graph.atomic_numbers[graph.neighbor_index], 0).astype(np.int16)
    return numbers, graph.neighbor_distance.astype(np.float32)


def environment_features(neighbor_numbers: np.ndarray, neighbor_distances: np.ndarray) -> np.ndarray:
    """Rotation-invariant features of each atom's surroundings, shape ``(n_atoms, ENVIRONMENT_LENGTH)``.

    The first ``len(DISTANCE_CENTRES)`` values are the neighbour distances smeared by Gaussians
    (a per-atom radial distribution); the rest is the mean of the neighbours' element features,
    weighted by ``exp(-(d - d_nearest) / NEIGHBOR_DECAY)`` so the first shell dominates.
    """
    present = neighbor_numbers > 0
    d = neighbor_distances.astype(np.float32)
    gauss = np.exp(-(((d[..., None] - DISTANCE_CENTRES) / DISTANCE_WIDTH) ** 2)) * present[..., None]
    histogram = gauss.sum(axis=1)
    nearest = np.where(present, d, np.inf).min(axis=1, keepdims=True)
    nearest = np.where(np.isfinite(nearest), nearest, 0.0)
    weights = np.exp(-(d - nearest) / NEIGHBOR_DECAY) * present
    weights /= np.clip(weights.sum(axis=1, keepdims=True), 1e-12, None)
    table = element_feature_table()
    mean_neighbor = np.einsum("an,anf->af", weights, table[neighbor_numbers.astype(np.int64)])
    return np.concatenate([histogram, mean_neighbor], axis=1).astype(np.float32)


@dataclass(frozen=True)
class PointBatch:
    """Padded batch of point clouds (numpy arrays).

    Attributes
    ----------
    points : numpy.ndarray
        Shape ``(n_crystals, max_atoms, FULL_POINT_FEATURE_LENGTH)``, float32: x, y, z, element
        features, environment features (zero where the cloud has no neighbour lists); padding rows are zero.
    mask : numpy.ndarray
        Shape ``(n_crystals, max_atoms)``, bool: True for real atoms.
    cell : numpy.ndarray
        Shape ``(n_crystals, CELL_DESCRIPTOR_LENGTH)``, float32.
    """

    points: np.ndarray
    mask: np.ndarray
    cell: np.ndarray


def pad_batch(
    atomic_numbers: Sequence[np.ndarray], coordinates: Sequence[np.ndarray], cells: Sequence[np.ndarray],
    neighbor_numbers: Sequence[np.ndarray] | None = None, neighbor_distances: Sequence[np.ndarray] | None = None,
) -> PointBatch:
    """Pad per-crystal arrays into one :class:`PointBatch` (element and environment features computed here)."""
    sizes = np.array([len(z) for z in atomic_numbers], dtype=np.int64)
    n, width = len(sizes), int(sizes.max()) if len(sizes) else 0
    mask = np.arange(width)[None, :] < sizes[:, None]
    flat_z = np.concatenate(atomic_numbers).astype(np.int64) if n else np.zeros(0, np.int64)
    flat_xyz = np.concatenate(coordinates) if n else np.zeros((0, 3), np.float32)
    points = np.zeros((n, width, FULL_POINT_FEATURE_LENGTH), dtype=np.float32)
    points[mask, :3] = flat_xyz
    points[mask, 3:POINT_FEATURE_LENGTH] = element_feature_table()[flat_z]
    if n and neighbor_numbers is not None and all(x is not None for x in neighbor_numbers):
        points[mask, POINT_FEATURE_LENGTH:] = environment_features(np.concatenate(neighbor_numbers),
                                                                   np.concatenate(neighbor_distances))
    cell = np.stack(cells).astype(np.float32) if n else np.zeros((0, CELL_DESCRIPTOR_LENGTH), np.float32)
    return PointBatch(points, mask, cell)


def collate_clouds(clouds: Sequence[PointCloud]) -> PointBatch:
    """Pad point clouds into one batch."""
    return pad_batch([c.atomic_numbers for c in clouds], [c.coordinates for c in clouds], [c.cell for c in clouds],
                     [c.neighbor_numbers for c in clouds], [c.neighbor_distances for c in clouds])
