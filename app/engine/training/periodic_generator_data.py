"""Training set of the periodic (all-crystal-system) generator.

Every crystal of the Materials Project formation-energy set, perov_5 and carbon_24 whose
standard cell (primitive, Niggli-reduced, see :mod:`app.engine.generation.periodic_density`)
has at most :data:`~app.engine.generation.periodic_density.MAX_SITES` sites is encoded once
into its periodic density and species maps and cached under
``cache_dir()/periodic_v<CACHE_VERSION>/`` as ``.npy`` files (density float16, species uint8,
lattice parameters float32) plus ``meta.json`` (ids, sources, crystal systems, formation
energies, standard cells). Each row also carries the formation energy per atom predicted by
the shipped ``formation_energy`` model, the generator's condition (as for the cubic model).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.engine.core.errors import StructureReadError
from app.engine.core.paths import cache_dir
from app.engine.generation.periodic_density import GRID, MAX_SITES, crystal_system, encode
from app.engine.training.datasets import read_mp_eform_gap, shared_data_dir, to_structure
from app.engine.training.training_index import read_carbon24, read_perov5

logger = logging.getLogger(__name__)

CACHE_VERSION = 1

#: Share (percent) of each source encoded, chosen by a second hash of the material id
#: (independent of the validation split): the set is sized for a CPU budget of about an hour
#: of encoding and training on a shared machine (see the model card).
SUBSET_PERCENT = {"mp_eform_gap": 25, "perov_5": 100, "carbon_24": 50}


def in_subset(material_id: str, source: str) -> bool:
    """True if the crystal is in the encoded subset of its source (see :data:`SUBSET_PERCENT`)."""
    import hashlib

    digest = hashlib.sha256(material_id.encode()).digest()
    return int.from_bytes(digest[4:8], "little") % 100 < SUBSET_PERCENT.get(source, 100)

_PREDICTOR = None


def _predictor():
    global _PREDICTOR
    if _PREDICTOR is None:
        import app.engine.properties.cgcnn  # noqa: F401  (registers the model kind)
        from app.engine.core.registry import load_model

        _PREDICTOR, _ = load_model("formation_energy")
    return _PREDICTOR


def _predicted_formation_energy(structure) -> float:
    import torch

    from app.engine.properties.cgcnn import batch_to_tensors
    from app.engine.properties.graph import collate
    from app.engine.properties.predictor import graph_for_prediction

    with torch.inference_mode():
        graph = graph_for_prediction(structure)
        return float(_predictor().predict(batch_to_tensors(collate([graph])))[0, 0])


def _encode_record(record):
    import torch

    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = to_structure(record)
            if len(structure) > 4 * MAX_SITES:  # no primitive cell of ≤ MAX_SITES sites (at most F-centred)
                return None
            maps = encode(structure)
            system = crystal_system(maps.structure)
            formation = _predicted_formation_energy(maps.structure)
        return (record.material_id, record.source, system, formation, maps.structure.as_dict(),
                maps.density.astype(np.float16), maps.species, maps.lattice)
    except StructureReadError:
        return None  # too many sites, too long or disordered: outside the generator's scope
    except Exception as error:  # one bad training row must not stop the set
        logger.warning("periodic generator set: skipping %s: %s", record.material_id, error)
        return None


@dataclass
class PeriodicDataset:
    """Encoded training cells of the periodic generator.

    Attributes
    ----------
    ids, sources, systems : numpy.ndarray
        ``(n,)`` str: material id, source set, crystal system of the standard cell.
    formation : numpy.ndarray
        ``(n,)`` float32, predicted formation energy per atom (eV/atom).
    structures : list of dict
        Standard cells (``Structure.as_dict()``), in map orientation.
    density : numpy.ndarray
        ``(n, G, G, G)`` float16.
    species : numpy.ndarray
        ``(n, G, G, G)`` uint8 atomic numbers.
    lattice : numpy.ndarray
        ``(n, 6)`` float32 lattice parameters.
    """

    ids: np.ndarray
    sources: np.ndarray
    systems: np.ndarray
    formation: np.ndarray
    structures: list
    density: np.ndarray
    species: np.ndarray
    lattice: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def cache_folder() -> Path:
    return cache_dir() / f"periodic_v{CACHE_VERSION}_g{GRID}"


def load_periodic_dataset(data_root: Path | None = None, workers: int = 2, mmap: bool = True) -> PeriodicDataset:
    """The encoded set, built on first use (``workers`` processes) and cached."""
    folder = cache_folder()
    if not (folder / "meta.json").exists():
        _build(folder, data_root or shared_data_dir(), workers)
    meta = json.loads((folder / "meta.json").read_text())
    mode = "r" if mmap else None
    return PeriodicDataset(
        ids=np.array(meta["ids"]), sources=np.array(meta["sources"]), systems=np.array(meta["systems"]),
        formation=np.array(meta["formation"], dtype=np.float32), structures=meta["structures"],
        density=np.load(folder / "density.npy", mmap_mode=mode), species=np.load(folder / "species.npy", mmap_mode=mode),
        lattice=np.load(folder / "lattice.npy"))


def _build(folder: Path, root: Path, workers: int) -> None:
    records = [r for r in list(read_mp_eform_gap(root)) + list(read_perov5(root)) + list(read_carbon24(root))
               if in_subset(r.material_id, r.source)]
    rows = []
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for n, row in enumerate(pool.imap(_encode_record, records, chunksize=32)):
            if row is not None:
                rows.append(row)
            if n % 1000 == 0:
                logger.info("periodic generator set: %d of %d read, %d kept", n, len(records), len(rows))
    logger.info("periodic generator set: %d of %d crystals have standard cells of ≤ 20 sites", len(rows), len(records))
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "density.npy", np.stack([r[5] for r in rows]))
    np.save(tmp / "species.npy", np.stack([r[6] for r in rows]))
    np.save(tmp / "lattice.npy", np.stack([r[7] for r in rows]).astype(np.float32))
    meta = {"ids": [r[0] for r in rows], "sources": [r[1] for r in rows], "systems": [r[2] for r in rows],
            "formation": [r[3] for r in rows], "structures": [r[4] for r in rows]}
    (tmp / "meta.json").write_text(json.dumps(meta))
    tmp.replace(folder)
