"""Builds ``models/ding_prototypes.json.gz``: structure prototypes for composition → structure.

From the Materials Project training crystals (``structures/mp_eform_gap``, training split only)
it keeps, for each anonymous formula (``AB2``, ``ABC3``, ...), the lowest-formation-energy crystals
of up to :data:`PER_ANONYMOUS_FORMULA` distinct space groups with at most :data:`MAX_SITES` sites.
Each prototype stores its cell, species and fractional coordinates; the runtime substitutes the
elements of a new composition into it and scales it to the predicted volume per atom.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import tarfile
import time
from collections import defaultdict
from pathlib import Path

from app.engine.core.paths import models_dir
from app.engine.core.registry import save_manifest_entry, sha256_of
from app.engine.training.datasets import is_validation, shared_data_dir

logger = logging.getLogger(__name__)

PROTOTYPES_NAME = "ding_prototypes"
PROTOTYPES_FILE = "ding_prototypes.json.gz"
MAX_SITES = 20
PER_ANONYMOUS_FORMULA = 3
#: Crystals parsed per anonymous formula to find that many space groups (lowest energies first).
PARSED_PER_ANONYMOUS_FORMULA = 6
_FORMULA_SUM = re.compile(r"_chemical_formula_sum\s+'?([^'\n]+)'?")


def _anonymous(formula_sum: str) -> tuple[str, int] | None:
    """Anonymous reduced formula and site count of a CIF's ``_chemical_formula_sum``."""
    from pymatgen.core import Composition

    try:
        composition = Composition(formula_sum)
    except Exception:  # malformed formula sums are skipped
        return None
    return composition.anonymized_formula, int(round(composition.num_atoms))


def _candidates(folder: Path) -> dict[str, list[tuple[float, str, str]]]:
    """(formation energy, id, CIF text) of the training crystals, grouped by anonymous formula."""
    import pandas as pd

    energies = pd.read_csv(folder / "properties.csv.gz").set_index("mp_id")["formation_energy_per_atom"].to_dict()
    groups: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    with tarfile.open(folder / "cifs.tar.gz") as archive:
        for member in archive:
            material_id = Path(member.name).stem
            if not member.isfile() or is_validation(material_id) or material_id not in energies:
                continue
            text = archive.extractfile(member).read().decode(errors="replace")
            match = _FORMULA_SUM.search(text)
            described = _anonymous(match.group(1)) if match else None
            if described and described[1] <= MAX_SITES:
                groups[described[0]].append((float(energies[material_id]), material_id, text))
    return groups


def _prototype(material_id: str, text: str, energy: float) -> dict | None:
    from pymatgen.core import Structure

    from app.engine.core.symmetry import space_group

    try:
        structure = Structure.from_str(text, fmt="cif")
    except Exception:  # unreadable CIFs are skipped
        return None
    if not structure.is_ordered:
        return None
    return {"id": material_id, "formula": structure.composition.reduced_formula,
            "anonymous": structure.composition.anonymized_formula, "space_group": space_group(structure),
            "formation_energy_per_atom": round(energy, 4),
            "lattice": [[round(x, 5) for x in row] for row in structure.lattice.matrix.tolist()],
            "species": [site.specie.symbol for site in structure],
            "frac_coords": [[round(x, 5) for x in site.frac_coords] for site in structure]}


def build_prototypes(output_dir: Path | None = None, data_dir: Path | None = None) -> dict:
    """Write the prototype file and its manifest entry; returns the entry."""
    output_dir = output_dir or models_dir()
    folder = data_dir or shared_data_dir() / "structures" / "mp_eform_gap"
    prototypes = []
    for anonymous, rows in sorted(_candidates(folder).items()):
        kept_groups: set = set()
        for energy, material_id, text in sorted(rows)[:PARSED_PER_ANONYMOUS_FORMULA]:
            prototype = _prototype(material_id, text, energy)
            if prototype and prototype["space_group"] not in kept_groups:
                kept_groups.add(prototype["space_group"])
                prototypes.append(prototype)
            if len(kept_groups) >= PER_ANONYMOUS_FORMULA:
                break
    path = output_dir / PROTOTYPES_FILE
    with gzip.GzipFile(path, "wb", mtime=0) as handle:
        handle.write(json.dumps(prototypes, separators=(",", ":")).encode())
    entry = {"file": path.name, "sha256": sha256_of(path), "kind": "structure_prototypes",
             "description": "Structure prototypes by anonymous formula for composition → structure",
             "data": {"dataset": "mp_eform_gap", "sources": [
                 "mp_eform_gap: Materials Project (Jain et al., APL Mater. 1, 011002, 2013), CC-BY-4.0"]},
             "split": {"method": "training split only: sha256(material_id) mod 100 >= 10"},
             "selection": {"max_sites": MAX_SITES, "per_anonymous_formula": PER_ANONYMOUS_FORMULA,
                           "rule": "lowest formation energy per space group"},
             "count": len(prototypes), "anonymous_formulas": len({p["anonymous"] for p in prototypes}),
             "created": time.strftime("%Y-%m-%d"), "card": f"{PROTOTYPES_NAME}.md"}
    save_manifest_entry(PROTOTYPES_NAME, entry, output_dir)
    logger.info("DING prototypes: %d for %d anonymous formulas", entry["count"], entry["anonymous_formulas"])
    return entry
