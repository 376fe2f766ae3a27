"""Compact indexes of the crystals the models were trained on, for the generator's novelty test.

``models/structure_index.npz`` (:func:`build_structure_index`) holds every training crystal of
every structure set (lattice, elements, fractional coordinates, grouped by reduced formula) for
the structural novelty test of :class:`app.engine.generation.novelty.StructureIndex`.
``models/training_index.json.gz`` (:func:`build_training_index`) maps each reduced formula to the
space groups (and ids) it occurs with, a dictionary look-up kept for quick formula questions.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import multiprocessing
import time
import warnings
from pathlib import Path

from app.engine.core.paths import models_dir
from app.engine.core.symmetry import SYMPREC, space_group
from app.engine.generation.novelty import (INDEX_FILE, STRUCTURE_INDEX_FILE, STRUCTURE_INDEX_NAME, StructureIndex,
                                          index_arrays)
from app.engine.training.datasets import READERS, LabelledCrystal, shared_data_dir, to_structure

logger = logging.getLogger(__name__)


def read_carbon24(root: Path):
    """carbon_24 cells, as records without labels."""
    csv.field_size_limit(1 << 24)
    for path in sorted((root / "structures" / "carbon_24").glob("*.csv.gz")):
        with gzip.open(path, "rt") as handle:
            for row in csv.DictReader(handle):
                yield LabelledCrystal(f"carbon_24-{row['material_id']}", "carbon_24", row["cif"], "cif", {})


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


def _index_row(record: LabelledCrystal):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = to_structure(record)
        if not structure.is_ordered:
            return None
        return record.material_id, record.source, structure
    except Exception as error:  # a bad training row must not stop the index
        logger.warning("structure index: skipping %s: %s", record.material_id, error)
        return None


def all_training_records(root: Path) -> list[LabelledCrystal]:
    """Records of every structure set in the shared data (labelled sets, perov_5, carbon_24)."""
    return ([r for reader in READERS.values() for r in reader(root)] + list(read_perov5(root))
            + list(read_carbon24(root)))


def build_structure_index(data_root: Path | None = None, output_dir: Path | None = None, workers: int = 2) -> Path:
    """Write ``structure_index.npz`` of every training crystal and its manifest entry.

    A material id present in several sets (MP ids recur in the elastic and optical sets) is
    stored once.
    """
    import numpy as np

    from app.engine.core.registry import save_manifest_entry, sha256_of

    root = data_root or shared_data_dir()
    records = all_training_records(root)
    seen: set[str] = set()
    unique_records = [r for r in records if not (r.material_id in seen or seen.add(r.material_id))]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        rows = [r for r in pool.imap(_index_row, unique_records, chunksize=256) if r is not None]
    folder = output_dir or models_dir()
    path = folder / STRUCTURE_INDEX_FILE
    arrays = index_arrays((material_id, structure) for material_id, _source, structure in rows)
    np.savez_compressed(path, **arrays)
    # The check uses the stored (quantised) arrays, as the generator will.
    check = check_index(StructureIndex(**arrays), [s for _, _, s in rows])
    counts = {source: sum(1 for _, s, _ in rows if s == source) for source in sorted({s for _, s, _ in rows})}
    entry = {
        "file": path.name,
        "sha256": sha256_of(path),
        "kind": STRUCTURE_INDEX_NAME,
        "description": "Every training crystal by reduced formula, for structural novelty (StructureMatcher).",
        "architecture": {"format": "npz", "arrays": sorted(arrays), "coordinates": "fractional, uint16 in units of 1/65536"},
        "units": {"lattices": "Å"},
        "data": {"sources": counts, "structures": len(rows), "formulas": int(len(arrays["formulas"])),
                 "skipped_unreadable_or_disordered": len(unique_records) - len(rows)},
        "split": {"note": "all rows of every set in the shared data (an index, not a model); the check "
                          "perturbs a random sample of indexed crystals and looks them up",
                  "validation_count": check["count"]},
        "epochs": 0,
        "metrics": check,
        "card": f"{STRUCTURE_INDEX_NAME}.md",
        "created": time.strftime("%Y-%m-%d"),
    }
    save_manifest_entry(STRUCTURE_INDEX_NAME, entry, folder)
    (folder / entry["card"]).write_text(_index_card(entry))
    return path


def _index_card(entry: dict) -> str:
    metrics = entry["metrics"]
    sources = "\n".join(f"| `{source}` | {count} |" for source, count in entry["data"]["sources"].items())
    return f"""# structure_index

Every crystal of the shared training data, stored compactly (`{entry['file']}`: lattice matrices in Å,
atomic numbers, fractional coordinates in steps of 1/65536, grouped by reduced formula) so that the generator can
tell whether a candidate is a known crystal: a candidate is novel when no indexed crystal of its
reduced formula matches it by pymatgen's StructureMatcher (ltol 0.3, stol 0.5, angle_tol 10°,
volumes scaled), after relaxation when it was relaxed. Not a model: nothing is learnt.

{entry['data']['structures']} structures, {entry['data']['formulas']} reduced formulas;
{entry['data']['skipped_unreadable_or_disordered']} rows skipped (unreadable or disordered).

Check (on {metrics['count']} random indexed crystals, each strained by up to 3 %, its atoms moved by
{metrics['displacement_angstrom']} Å, and rescaled by 5 %): {100 * metrics['perturbed_copies_found']:.1f} % are
found as known; mean look-up time {1000 * metrics['lookup_seconds']:.1f} ms.

| set | structures |
|---|---|
{sources}

Data: Materials Project (CC-BY-4.0), Petousis et al. 2017, Naccarato et al. 2019, perov_5 (Castelli et al.,
CDVAE split), carbon_24 (CDVAE); held-back test rows of those sets are not in the shared data and not here.

Rebuild: `crystal-designer build-index`.
"""


def check_index(index: StructureIndex, structures: list, count: int = 200, max_sites: int = 40,
                displacement: float = 0.05, seed: int = 0) -> dict:
    """Share of perturbed copies of random indexed crystals (≤ ``max_sites``) that the index finds.

    Each copy's cell is strained by up to 3 % per component, every atom moved by ``displacement`` Å
    in a random direction, and the volume scaled by 5 %: what relaxing or decoding does to a known
    crystal. Returns the count, the share found and the mean look-up time (s).
    """
    import numpy as np
    from pymatgen.core import Lattice, Structure

    rng = np.random.default_rng(seed)
    small = [s for s in structures if len(s) <= max_sites]
    picked = [small[i] for i in rng.choice(len(small), size=min(count, len(small)), replace=False)]
    found, began = 0, time.perf_counter()
    for structure in picked:
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
        lattice = Lattice(structure.lattice.matrix @ strain * 1.05 ** (1 / 3))
        shifts = rng.standard_normal((len(structure), 3))
        shifts *= displacement / np.linalg.norm(shifts, axis=1, keepdims=True)
        copy = Structure(lattice, structure.species,
                         lattice.get_fractional_coords(lattice.get_cartesian_coords(structure.frac_coords) + shifts))
        found += index.match(copy) is not None
    return {"count": len(picked), "perturbed_copies_found": found / max(len(picked), 1),
            "displacement_angstrom": displacement, "lookup_seconds": (time.perf_counter() - began) / max(len(picked), 1)}
