"""Featurised training sets, built once and cached on disk: crystal graphs and point clouds.

Parsing and featurising dominate training start-up on a 2-core machine (minutes for the 33k-crystal
MP set), so each data set is featurised once into one ``.npz`` file of concatenated arrays in the
cache folder and reloaded in a second afterwards. Both kinds of model input share the reading,
the worker pool, the label table and the cache file handling here; only the per-crystal feature
(:func:`app.engine.properties.graph.build_graph` or
:func:`app.engine.properties.point_cloud.point_cloud`) and the arrays that hold it differ.
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from app.engine.core.paths import cache_dir
from app.engine.properties.graph import CrystalGraph, build_graph
from app.engine.properties.point_cloud import CELL_DESCRIPTOR_LENGTH, PointBatch, pad_batch, point_cloud
from app.engine.training.datasets import READERS, LabelledCrystal, shared_data_dir, to_structure

logger = logging.getLogger(__name__)

#: Bump when the graph construction changes, so stale graph caches are rebuilt.
GRAPH_CACHE_VERSION = 1
#: Bump when the point-cloud construction changes, so stale point caches are rebuilt.
POINT_CACHE_VERSION = 3


@dataclass
class _LabelledArrays:
    """What every featurised data set holds besides its features.

    Attributes
    ----------
    ids, sources, formulas : numpy.ndarray
        Shape ``(n_crystals,)``, str.
    label_names : list of str
    labels : numpy.ndarray
        Shape ``(n_crystals, n_labels)``, float32, NaN where unknown.
    atom_offsets : numpy.ndarray
        Shape ``(n_crystals + 1,)``: crystal ``i`` owns atoms ``atom_offsets[i]:atom_offsets[i+1]``.
    """

    ids: np.ndarray
    sources: np.ndarray
    formulas: np.ndarray
    label_names: list[str]
    labels: np.ndarray
    atom_offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.atom_offsets)

    def label(self, name: str) -> np.ndarray:
        """Labels ``name`` of every crystal (NaN where this set has none)."""
        if name not in self.label_names:
            return np.full(len(self), np.nan, dtype=np.float32)
        return self.labels[:, self.label_names.index(name)]


@dataclass
class GraphDataset(_LabelledArrays):
    """Crystal graphs with labels, held as concatenated arrays.

    Attributes
    ----------
    atomic_numbers, neighbor_index, neighbor_distance, neighbor_mask : numpy.ndarray
        Concatenated :class:`CrystalGraph` arrays (neighbour indices local to each crystal).
    """

    atomic_numbers: np.ndarray
    neighbor_index: np.ndarray
    neighbor_distance: np.ndarray
    neighbor_mask: np.ndarray

    def graph(self, i: int) -> CrystalGraph:
        start, stop = self.atom_offsets[i], self.atom_offsets[i + 1]
        return CrystalGraph(
            self.atomic_numbers[start:stop],
            self.neighbor_index[start:stop],
            self.neighbor_distance[start:stop],
            self.neighbor_mask[start:stop],
        )


@dataclass
class PointDataset(_LabelledArrays):
    """Point clouds with labels, held as concatenated arrays.

    Attributes
    ----------
    atomic_numbers : numpy.ndarray
        Shape ``(n_atoms_total,)``, int16.
    coordinates : numpy.ndarray
        Shape ``(n_atoms_total, 3)``, float32, Å (standardised cell, centred).
    cells : numpy.ndarray
        Shape ``(n_crystals, CELL_DESCRIPTOR_LENGTH)``, float32.
    neighbor_numbers, neighbor_distances : numpy.ndarray
        Shape ``(n_atoms_total, ENVIRONMENT_NEIGHBORS)``: the :class:`PointCloud` neighbour lists.
    """

    atomic_numbers: np.ndarray
    coordinates: np.ndarray
    cells: np.ndarray
    neighbor_numbers: np.ndarray
    neighbor_distances: np.ndarray

    def batch(self, indices: np.ndarray, rotations: np.ndarray | None = None) -> PointBatch:
        """Padded batch of crystals ``indices``; ``rotations`` (shape ``(len(indices), 3, 3)``) rotate each cloud."""
        z, xyz, numbers, distances = [], [], [], []
        for k, i in enumerate(indices):
            start, stop = self.atom_offsets[i], self.atom_offsets[i + 1]
            z.append(self.atomic_numbers[start:stop])
            coordinates = self.coordinates[start:stop]
            xyz.append(coordinates @ rotations[k].T if rotations is not None else coordinates)
            numbers.append(self.neighbor_numbers[start:stop])
            distances.append(self.neighbor_distances[start:stop])
        return pad_batch(z, xyz, [self.cells[i] for i in indices], numbers, distances)


# --- featurisation ---------------------------------------------------------------------------

def _graph_or_none(structure) -> CrystalGraph | None:
    """Neighbour graph of an ordered, non-empty structure (None for others: skipped silently)."""
    if not structure.is_ordered or len(structure) == 0:
        return None
    return build_graph(structure)


def _featurise_one(record: LabelledCrystal, build: Callable):
    """``(id, source, formula, labels, feature)`` of one training row, None if it cannot be used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = to_structure(record)
        feature = build(structure)
        if feature is None:
            return None
        return record.material_id, record.source, structure.composition.reduced_formula, record.labels, feature
    except Exception as error:  # one bad training row must not stop featurisation
        logger.warning("skipping %s: %s", record.material_id, error)
        return None


def _featurise_all(records: Sequence[LabelledCrystal], build: Callable, workers: int) -> tuple[dict, list]:
    """The shared fields of a data set and the per-crystal features, built in ``workers`` processes."""
    one = functools.partial(_featurise_one, build=build)
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(one, records, chunksize=64)
    else:
        results = [one(r) for r in records]
    results = [r for r in results if r is not None]
    label_names = sorted({name for r in results for name in r[3]})
    features = [r[4] for r in results]
    sizes = np.array([f.n_atoms for f in features], dtype=np.int64)
    shared = dict(
        ids=np.array([r[0] for r in results]),
        sources=np.array([r[1] for r in results]),
        formulas=np.array([r[2] for r in results]),
        label_names=label_names,
        labels=np.array([[r[3].get(n, math.nan) for n in label_names] for r in results], dtype=np.float32),
        atom_offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
    )
    return shared, features


def featurise_graphs(records: Sequence[LabelledCrystal], workers: int = 2) -> GraphDataset:
    """Crystal graphs of ``records`` (disordered and empty structures skipped), built in ``workers`` processes."""
    shared, graphs = _featurise_all(records, _graph_or_none, workers)
    return GraphDataset(
        **shared,
        atomic_numbers=np.concatenate([g.atomic_numbers for g in graphs]),
        neighbor_index=np.concatenate([g.neighbor_index for g in graphs]),
        neighbor_distance=np.concatenate([g.neighbor_distance for g in graphs]),
        neighbor_mask=np.concatenate([g.neighbor_mask for g in graphs]),
    )


def featurise_points(records: Sequence[LabelledCrystal], workers: int = 2) -> PointDataset:
    """Point clouds of ``records``, built in ``workers`` processes."""
    shared, clouds = _featurise_all(records, point_cloud, workers)
    return PointDataset(
        **shared,
        atomic_numbers=np.concatenate([c.atomic_numbers for c in clouds]),
        coordinates=np.concatenate([c.coordinates for c in clouds]),
        cells=np.stack([c.cell for c in clouds]) if clouds else np.zeros((0, CELL_DESCRIPTOR_LENGTH), np.float32),
        neighbor_numbers=np.concatenate([c.neighbor_numbers for c in clouds]),
        neighbor_distances=np.concatenate([c.neighbor_distances for c in clouds]).astype(np.float16),
    )


# --- cache files -----------------------------------------------------------------------------

def _cached(path: Path, kind: type, name: str, build: Callable, data_root: Path | None, workers: int):
    """Data set ``name`` of class ``kind`` from ``path``, or built by ``build(records, workers)`` and saved there."""
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        arrays["label_names"] = [str(x) for x in arrays["label_names"]]
        return kind(**arrays)
    records = list(READERS[name](data_root or shared_data_dir()))
    logger.info("featurising %d crystals of %s (%s)", len(records), name, kind.__name__)
    dataset = build(records, workers=workers)
    fields = dict(vars(dataset))
    fields["label_names"] = np.array(dataset.label_names)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **fields)
    tmp.replace(path)  # whole file or none: an interrupted build never leaves a broken cache
    return dataset


def load_dataset(name: str, data_root: Path | None = None, workers: int = 2) -> GraphDataset:
    """Graph data set ``name`` (a key of ``READERS``), from the cache when present."""
    path = cache_dir() / f"{name}.v{GRAPH_CACHE_VERSION}.npz"
    return _cached(path, GraphDataset, name, featurise_graphs, data_root, workers)


def load_point_dataset(name: str, data_root: Path | None = None, workers: int = 2) -> PointDataset:
    """Point-cloud data set ``name`` (a key of ``READERS``), from the cache when present."""
    path = cache_dir() / f"points_{name}.v{POINT_CACHE_VERSION}.npz"
    return _cached(path, PointDataset, name, featurise_points, data_root, workers)


# --- point-cloud helpers of the PointNet trainer ------------------------------------------

def concatenate(datasets: Sequence[PointDataset]) -> PointDataset:
    """One data set holding the rows of ``datasets`` (labels aligned by name, NaN where missing)."""
    names = sorted({n for d in datasets for n in d.label_names})
    offsets, shift = [], 0
    for d in datasets:
        offsets.append(d.atom_offsets[:-1] + shift)
        shift += int(d.atom_offsets[-1])
    return PointDataset(
        ids=np.concatenate([d.ids for d in datasets]),
        sources=np.concatenate([d.sources for d in datasets]),
        formulas=np.concatenate([d.formulas for d in datasets]),
        label_names=names,
        labels=np.concatenate([np.stack([d.label(n) for n in names], axis=1) for d in datasets]).astype(np.float32),
        atom_offsets=np.concatenate(offsets + [[shift]]).astype(np.int64),
        atomic_numbers=np.concatenate([d.atomic_numbers for d in datasets]),
        coordinates=np.concatenate([d.coordinates for d in datasets]),
        cells=np.concatenate([d.cells for d in datasets]),
        neighbor_numbers=np.concatenate([d.neighbor_numbers for d in datasets]),
        neighbor_distances=np.concatenate([d.neighbor_distances for d in datasets]),
    )


def validation_records(names: Sequence[str], data_root: Path | None = None) -> list[LabelledCrystal]:
    """The validation crystals (material-id hash split) of the data sets ``names``."""
    from app.engine.training.datasets import is_validation

    root = data_root or shared_data_dir()
    return [r for name in names for r in READERS[name](root) if is_validation(r.material_id)]


def validation_point_dataset(names: Sequence[str], workers: int = 2) -> PointDataset:
    """Point clouds of the validation crystals of ``names``, built now by the runtime featuriser
    (so evaluation never depends on a cache built by an older point-cloud construction)."""
    return featurise_points(validation_records(names), workers=workers)
