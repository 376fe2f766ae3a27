"""Compact index of the crystals the models were trained on, for the generator's novelty filter.

``models/training_index.json.gz`` maps each reduced formula to the space groups (and ids) it
occurs with in the training data, so "is this candidate already known?" is a dictionary
lookup, without shipping the data itself.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import multiprocessing
import warnings
from pathlib import Path

from app.engine.core.paths import models_dir
from app.engine.core.symmetry import SYMPREC, space_group
from app.engine.generation.novelty import INDEX_FILE
from app.engine.training.datasets import READERS, LabelledCrystal, shared_data_dir, to_structure

logger = logging.getLogger(__name__)



def read_perov5(root: Path):
    """perov_5 cells (both files here), as records without labels."""
    csv.field_size_limit(1 << 24)
    for split in ("train", "val"):
        path = root / "structures" / "perov_5" / f"{split}.csv.gz"
        with gzip.open(path, "rt") as handle:
            for row in csv.DictReader(handle):
                yield LabelledCrystal(f"perov_5-{row['material_id']}", "perov_5", row["cif"], "cif", {})


def _fingerprint(record: LabelledCrystal):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = to_structure(record)
            found = space_group(structure)
        if found is None:
            return None
        return structure.composition.reduced_formula, found[1], record.material_id, record.source
    except Exception as error:  # a bad training row must not stop the index
        logger.warning("index: skipping %s: %s", record.material_id, error)
        return None


def build_training_index(data_root: Path | None = None, output_dir: Path | None = None, workers: int = 2) -> Path:
    """Write the index of every structure set the shipped models learnt from."""
    root = data_root or shared_data_dir()
    records = [r for reader in READERS.values() for r in reader(root)] + list(read_perov5(root))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        rows = [r for r in pool.map(_fingerprint, records, chunksize=128) if r is not None]
    index: dict[str, dict[str, list[str]]] = {}
    for formula, number, material_id, _source in rows:
        ids = index.setdefault(formula, {}).setdefault(str(number), [])
        if material_id not in ids:
            ids.append(material_id)
    path = (output_dir or models_dir()) / INDEX_FILE
    payload = {
        "description": f"reduced formula -> space group number (symprec {SYMPREC}) -> training ids",
        "sources": sorted({r[3] for r in rows}),
        "count": len(rows),
        "formulas": index,
    }
    with gzip.open(path, "wt") as handle:
        json.dump(payload, handle, separators=(",", ":"))
    return path
