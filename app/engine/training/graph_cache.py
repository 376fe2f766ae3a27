"""Featurised training sets: crystal graphs plus labels, built once and cached on disk.

Parsing and neighbour search dominate training start-up on a 2-core machine (minutes for the
33k-crystal MP set), so each data set is featurised once into one ``.npz`` file of concatenated
arrays and reloaded in a second afterwards.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from app.engine.core.paths import cache_dir
from app.engine.properties.graph import CrystalGraph, build_graph
from app.engine.training.datasets import READERS, LabelledCrystal, shared_data_dir, to_structure

logger = logging.getLogger(__name__)

#: Bump when the graph construction changes, so stale caches are rebuilt.
CACHE_VERSION = 1


@dataclass
class GraphDataset:
    """Crystal graphs with labels, held as concatenated arrays.

    Attributes
    ----------
    ids, sources, formulas : numpy.ndarray
        Shape ``(n_crystals,)``, str.
    label_names : list of str
    labels : numpy.ndarray
        Shape ``(n_crystals, n_labels)``, float32, NaN where unknown.
    atom_offsets : numpy.ndarray
        Shape ``(n_crystals + 1,)``: crystal ``i`` owns atoms ``atom_offsets[i]:atom_offsets[i+1]``.
    atomic_numbers, neighbor_index, neighbor_distance, neighbor_mask : numpy.ndarray
        Concatenated :class:`CrystalGraph` arrays (neighbour indices local to each crystal).
    """

    ids: np.ndarray
    sources: np.ndarray
    formulas: np.ndarray
    label_names: list[str]
    labels: np.ndarray
    atom_offsets: np.ndarray
    atomic_numbers: np.ndarray
    neighbor_index: np.ndarray
    neighbor_distance: np.ndarray
    neighbor_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def graph(self, i: int) -> CrystalGraph:
        start, stop = self.atom_offsets[i], self.atom_offsets[i + 1]
        return CrystalGraph(
            self.atomic_numbers[start:stop],
            self.neighbor_index[start:stop],
            self.neighbor_distance[start:stop],
            self.neighbor_mask[start:stop],
        )

    def label(self, name: str) -> np.ndarray:
        return self.labels[:, self.label_names.index(name)]


def _featurise(record: LabelledCrystal):
    try:
        structure = to_structure(record)
        if not structure.is_ordered or len(structure) == 0:
            return None
        return record.material_id, record.source, structure.composition.reduced_formula, record.labels, build_graph(structure)
    except Exception as error:  # one bad training row must not stop featurisation
        logger.warning("skipping %s: %s", record.material_id, error)
        return None


def featurise(records: Sequence[LabelledCrystal], workers: int = 2) -> GraphDataset:
    """Build graphs for ``records`` in ``workers`` processes."""
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_featurise, records, chunksize=64)
    else:
        results = [_featurise(r) for r in records]
    results = [r for r in results if r is not None]
    label_names = sorted({name for r in results for name in r[3]})
    graphs = [r[4] for r in results]
    sizes = np.array([g.n_atoms for g in graphs])
    return GraphDataset(
        ids=np.array([r[0] for r in results]),
        sources=np.array([r[1] for r in results]),
        formulas=np.array([r[2] for r in results]),
        label_names=label_names,
        labels=np.array(
            [[r[3].get(name, math.nan) for name in label_names] for r in results], dtype=np.float32
        ),
        atom_offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        atomic_numbers=np.concatenate([g.atomic_numbers for g in graphs]),
        neighbor_index=np.concatenate([g.neighbor_index for g in graphs]),
        neighbor_distance=np.concatenate([g.neighbor_distance for g in graphs]),
        neighbor_mask=np.concatenate([g.neighbor_mask for g in graphs]),
    )


def load_dataset(name: str, data_root: Path | None = None, workers: int = 2) -> GraphDataset:
    """Featurised data set ``name`` (a key of ``READERS``), from the cache when present."""
    path = cache_dir() / f"{name}.v{CACHE_VERSION}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        arrays["label_names"] = [str(x) for x in arrays["label_names"]]
        return GraphDataset(**arrays)
    root = data_root or shared_data_dir()
    records = list(READERS[name](root))
    logger.info("featurising %d crystals of %s", len(records), name)
    dataset = featurise(records, workers=workers)
    fields = {k: v for k, v in vars(dataset).items()}
    fields["label_names"] = np.array(dataset.label_names)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **fields)
    tmp.replace(path)
    return dataset
