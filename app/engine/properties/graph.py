"""Crystal graphs: atoms as nodes, their nearest periodic neighbours as edges (CGCNN).

Each atom keeps up to ``max_neighbors`` neighbours found within ``cutoff`` Å (periodic images
included). Atoms with fewer neighbours carry a mask so padding never enters the convolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from app.engine.core.errors import StructureReadError

#: Neighbour search radius (Å) and neighbour count, as in the CGCNN and ICSG3D papers.
DEFAULT_CUTOFF = 8.0
DEFAULT_MAX_NEIGHBORS = 12


@dataclass(frozen=True)
class CrystalGraph:
    """Neighbour graph of one crystal.

    Attributes
    ----------
    atomic_numbers : numpy.ndarray
        Shape ``(n_atoms,)``, int16.
    neighbor_index : numpy.ndarray
        Shape ``(n_atoms, max_neighbors)``, int32: index of each neighbour (0 where padded).
    neighbor_distance : numpy.ndarray
        Shape ``(n_atoms, max_neighbors)``, float32, Å (cutoff where padded).
    neighbor_mask : numpy.ndarray
        Shape ``(n_atoms, max_neighbors)``, bool: True for real neighbours.
    """

    atomic_numbers: np.ndarray
    neighbor_index: np.ndarray
    neighbor_distance: np.ndarray
    neighbor_mask: np.ndarray

    @property
    def n_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])


def build_graph(
    structure, cutoff: float = DEFAULT_CUTOFF, max_neighbors: int = DEFAULT_MAX_NEIGHBORS
) -> CrystalGraph:
    """Build the neighbour graph of an ordered pymatgen ``Structure``.

    Parameters
    ----------
    structure : pymatgen.core.Structure
        Ordered structure (one species per site).
    cutoff : float
        Neighbour search radius in Å.
    max_neighbors : int
        Number of nearest neighbours kept per atom.
    """
    n_atoms = len(structure)
    atomic_numbers = np.array([site.specie.Z for site in structure], dtype=np.int16)
    centers, neighbors, _images, distances = structure.get_neighbor_list(cutoff)
    # Sort edges by centre, then by distance, and keep the first max_neighbors of each centre.
    order = np.lexsort((distances, centers))
    centers, neighbors, distances = centers[order], neighbors[order], distances[order]
    starts = np.searchsorted(centers, np.arange(n_atoms))
    rank = np.arange(len(centers)) - starts[centers]
    keep = rank < max_neighbors
    centers, neighbors, distances, rank = centers[keep], neighbors[keep], distances[keep], rank[keep]

    neighbor_index = np.zeros((n_atoms, max_neighbors), dtype=np.int32)
    neighbor_distance = np.full((n_atoms, max_neighbors), cutoff, dtype=np.float32)
    neighbor_mask = np.zeros((n_atoms, max_neighbors), dtype=bool)
    neighbor_index[centers, rank] = neighbors
    neighbor_distance[centers, rank] = distances
    neighbor_mask[centers, rank] = True
    return CrystalGraph(atomic_numbers, neighbor_index, neighbor_distance, neighbor_mask)


@dataclass(frozen=True)
class GraphBatch:
    """Several crystal graphs concatenated into one disjoint graph (numpy arrays).

    ``crystal_index`` (shape ``(total_atoms,)``) tells which crystal each atom belongs to;
    neighbour indices are shifted to address the concatenated atom list.
    """

    atomic_numbers: np.ndarray
    neighbor_index: np.ndarray
    neighbor_distance: np.ndarray
    neighbor_mask: np.ndarray
    crystal_index: np.ndarray
    n_crystals: int


def collate(graphs: Sequence[CrystalGraph]) -> GraphBatch:
    """Concatenate graphs into one batch."""
    sizes = np.array([g.n_atoms for g in graphs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return GraphBatch(
        atomic_numbers=np.concatenate([g.atomic_numbers for g in graphs]).astype(np.int64),
        neighbor_index=np.concatenate(
            [g.neighbor_index.astype(np.int64) + off for g, off in zip(graphs, offsets)]
        ),
        neighbor_distance=np.concatenate([g.neighbor_distance for g in graphs]),
        neighbor_mask=np.concatenate([g.neighbor_mask for g in graphs]),
        crystal_index=np.repeat(np.arange(len(graphs)), sizes),
        n_crystals=len(graphs),
    )


def require_predictable(structure) -> None:
    """Raise :class:`StructureReadError` saying why the property models can't use ``structure``
    (no atoms, partial occupancy, non-finite coordinates or a degenerate cell)."""
    if len(structure) == 0:
        raise StructureReadError("The structure has no atoms.")
    if not structure.is_ordered:
        raise StructureReadError(
            "The structure has partially occupied sites; the property models need an ordered crystal "
            "(pick one ordering, e.g. with an order-disorder tool, and load that)."
        )
    if not np.all(np.isfinite(structure.cart_coords)) or not math.isfinite(structure.volume) or structure.volume <= 1e-6:
        raise StructureReadError("The structure has invalid coordinates or a degenerate cell.")
