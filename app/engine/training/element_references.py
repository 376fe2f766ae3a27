"""Elemental reference energies (PBE, eV/atom) for turning formation energies into total energies."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from app.engine.core.paths import models_dir
from app.engine.properties.predictor import ELEMENT_REFERENCES_FILE
from app.engine.training.datasets import shared_data_dir


def build_element_references(data_root: Path | None = None, output_dir: Path | None = None) -> Path:
    """Write ``element_references.json``: the lowest PBE energy per atom of each element's phases."""
    source = (data_root or shared_data_dir()) / "references" / "mp_pbe_element_refs.json.gz"
    with gzip.open(source, "rt") as handle:
        raw = json.load(handle)
    energies = {symbol: min(entry["energy_per_atom"]) for symbol, entry in sorted(raw.items())}
    path = (output_dir or models_dir()) / ELEMENT_REFERENCES_FILE
    path.write_text(json.dumps({
        "description": "Ground-state PBE energy per atom of each element (lowest of its MP phases); "
                       "E/atom = Ef/atom + sum_i x_i * mu_i. Exact for uncorrected PBE energies; "
                       "MP's anion/U corrections make real compounds differ by up to ~0.3 eV/atom.",
        "source": "shared/data/references/mp_pbe_element_refs.json.gz (Materials Project, CC-BY-4.0)",
        "energy_per_atom_eV": energies,
    }, indent=1) + "\n")
    return path
