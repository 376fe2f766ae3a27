"""Training set of the voxel generator: small cubic cells of the ICSG3D structure classes.

Selection (paper Methods): conventional cubic cells with ≤ 40 sites of cubic AB binaries,
ABX3 perovskites and X2YZ / XYZ Heuslers from the Materials Project set, plus every perov_5
cell. Each cell is encoded once into its density and species maps and cached (float16
density, uint8 species class), since encoding 10⁴ cells every epoch would cost more than the
VAE itself on two cores.
"""

from __future__ import annotations

import logging
import multiprocessing
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.engine.generation.density import encode
from app.engine.core.errors import StructureReadError
from app.engine.training.datasets import read_mp_eform_gap, shared_data_dir, to_structure
from app.engine.core.paths import cache_dir
from app.engine.training.training_index import read_perov5

logger = logging.getLogger(__name__)

CACHE_VERSION = 1

#: Sorted element amounts of a reduced formula → structure class (ICSG3D's three families).
COMPOSITION_CLASSES = {
    (1, 1): "AB binary",
    (1, 1, 3): "ABX3 perovskite",
    (1, 1, 2): "X2YZ Heusler",
    (1, 1, 1): "XYZ half-Heusler",
}


def composition_class(structure) -> str | None:
    """ICSG3D class of a structure's reduced formula, or None."""
    amounts = tuple(sorted(int(round(x)) for x in structure.composition.reduced_composition.values()))
    return COMPOSITION_CLASSES.get(amounts)


def _encode_record(record):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = to_structure(record)
            if record.source != "perov_5" and composition_class(structure) is None:
                return None
            encoded = encode(structure)
        return (record.material_id, record.source, encoded.structure.as_dict(),
                encoded.density.astype(np.float16), encoded.species.astype(np.uint8))
    except StructureReadError:
        return None  # not cubic, too many sites or disordered: outside the generator's scope
    except Exception as error:  # one bad training row must not stop the set
        logger.warning("generator set: skipping %s: %s", record.material_id, error)
        return None


@dataclass
class VoxelDataset:
    """Encoded generator training cells.

    Attributes
    ----------
    ids, sources : numpy.ndarray
        Shape ``(n,)``, str.
    structures : list of dict
        Conventional cells (``Structure.as_dict()``), in map orientation.
    density : numpy.ndarray
        Shape ``(n, G, G, G)``, float16, Z/Å³.
    species : numpy.ndarray
        Shape ``(n, G, G, G)``, uint8 atomic numbers (0 = background).
    """

    ids: np.ndarray
    sources: np.ndarray
    structures: list
    density: np.ndarray
    species: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def load_voxel_dataset(data_root: Path | None = None, workers: int = 2) -> VoxelDataset:
    """The encoded generator set, built on first use and cached."""
    import json

    path = cache_dir() / f"voxels.v{CACHE_VERSION}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return VoxelDataset(ids=data["ids"], sources=data["sources"],
                                structures=json.loads(str(data["structures"])),
                                density=data["density"], species=data["species"])
    root = data_root or shared_data_dir()
    records = list(read_mp_eform_gap(root)) + list(read_perov5(root))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        rows = [r for r in pool.imap(_encode_record, records, chunksize=64) if r is not None]
    logger.info("generator set: %d of %d crystals are small cubic cells of the ICSG3D classes", len(rows), len(records))
    dataset = VoxelDataset(
        ids=np.array([r[0] for r in rows]), sources=np.array([r[1] for r in rows]),
        structures=[r[2] for r in rows],
        density=np.stack([r[3] for r in rows]), species=np.stack([r[4] for r in rows]),
    )
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=dataset.ids, sources=dataset.sources, structures=json.dumps(dataset.structures),
             density=dataset.density, species=dataset.species)
    tmp.replace(path)
    return dataset
