"""Novelty look-up: is a candidate already among the crystals the models were trained on?

``models/training_index.json.gz`` (written by ``crystal-designer build-index``) maps each reduced
formula to the space groups (and ids) it occurs with in the training data, so the look-up is a
dictionary access, without shipping the data itself.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from app.engine.core.paths import models_dir

INDEX_FILE = "training_index.json.gz"


class TrainingIndex:
    """Lookup of known (formula, space group) pairs."""

    def __init__(self, path: Path | None = None):
        path = path or models_dir() / INDEX_FILE
        with gzip.open(path, "rt") as handle:
            self._formulas: dict[str, dict[str, list[str]]] = json.load(handle)["formulas"]

    def known(self, reduced_formula: str, space_group: int) -> bool:
        return str(space_group) in self._formulas.get(reduced_formula, {})

    def ids(self, reduced_formula: str) -> list[str]:
        return [i for ids in self._formulas.get(reduced_formula, {}).values() for i in ids]
