"""The OQMD composition data behind the DING models: joined, normalised, cleaned and split.

``compositions/oqmd/`` holds three ``formula,target`` files (formation enthalpy, energy per atom,
volume per atom; not row-aligned) and ``ding_three_targets.csv.gz`` (all three per row). Formulas
are normalised to their reduced formula unit, the three files are joined on it, the combined file
adds the compositions the join lacks, and where one composition appears twice the entry with the
lowest formation enthalpy is kept (the paper's rule for several structures of one composition).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.engine.compositions.formula import VOCABULARY, FormulaError, count_vector, formula_string, parse_formula
from app.engine.compositions.networks import PROPERTIES
from app.engine.core.paths import cache_dir
from app.engine.training.datasets import is_validation, shared_data_dir

logger = logging.getLogger(__name__)

OQMD_FOLDER = Path("compositions") / "oqmd"
#: Labels outside these bounds are DFT artefacts (e.g. 43 eV/atom formation enthalpies) and dropped.
PLAUSIBLE_RANGES = {"formation_enthalpy": (-5.0, 5.0), "energy_per_atom": (-15.0, 0.0), "volume_per_atom": (2.0, 100.0)}
SPLIT_METHOD = "sha256(normalised formula) mod 100 < 10 -> validation"
SOURCE = ("OQMD (Kirklin et al., npj Comput. Mater. 1, 15010, 2015; Saal et al., JOM 65, 1501, 2013), CC-BY-4.0, "
          "via the CrabNet and DING repositories (MIT)")
CACHE_VERSION = 1


@dataclass
class CompositionData:
    """Compositions with their three labels; rows aligned across fields."""

    formulas: np.ndarray  # (n,) normalised formulas (str)
    counts: np.ndarray  # (n, len(VOCABULARY)) int64 reduced element counts
    targets: np.ndarray  # (n, 3) float32 in PROPERTIES order
    validation: np.ndarray  # (n,) bool
    report: dict  # row counts of each step (for the manifest)

    @property
    def train_rows(self) -> np.ndarray:
        return np.flatnonzero(~self.validation)

    @property
    def validation_rows(self) -> np.ndarray:
        return np.flatnonzero(self.validation)


def formula_in_validation(formula: str) -> bool:
    """The split rule: a hash of the normalised formula (as the structure sets hash their ids)."""
    return is_validation(formula)


def _normalised_frame(frame, column: str):
    """Frame with a ``formula`` column normalised; unreadable or out-of-vocabulary rows dropped."""
    formulas, dropped = [], 0
    cache: dict[str, str | None] = {}
    for text in frame[column].astype(str):
        if text not in cache:
            try:
                cache[text] = formula_string(parse_formula(text))
            except FormulaError:
                cache[text] = None
        formulas.append(cache[text])
        dropped += cache[text] is None
    out = frame.assign(formula=formulas).dropna(subset=["formula"])
    return out, dropped


def _joined_frame(folder: Path):
    import pandas as pd

    report: dict = {}
    per_property = []
    for name in PROPERTIES:
        frame = pd.read_csv(folder / f"{name}.csv.gz")
        report[f"{name}_rows"] = int(len(frame))
        frame, dropped = _normalised_frame(frame, "formula")
        report[f"{name}_unusable_formulas"] = int(dropped)
        per_property.append(frame[["formula", "target"]].rename(columns={"target": name}))
    joined = per_property[0].sort_values("formation_enthalpy").drop_duplicates("formula")
    for frame in per_property[1:]:
        joined = joined.merge(frame.drop_duplicates("formula"), on="formula", how="inner")
    report["joined_three_files"] = int(len(joined))
    combined = pd.read_csv(folder / "ding_three_targets.csv.gz")
    report["combined_file_rows"] = int(len(combined))
    combined, dropped = _normalised_frame(combined, "comp")
    report["combined_file_unusable_formulas"] = int(dropped)
    combined = combined.rename(columns={"delta_e": "formation_enthalpy", "energy_pa": "energy_per_atom",
                                        "volume_pa": "volume_per_atom"})[["formula", *PROPERTIES]]
    for name in PROPERTIES:
        combined[name] = pd.to_numeric(combined[name], errors="coerce")
    frame = pd.concat([joined, combined.dropna()], ignore_index=True)
    frame = frame.sort_values("formation_enthalpy").drop_duplicates("formula").reset_index(drop=True)
    report["compositions_joined"] = int(len(frame))
    plausible = np.ones(len(frame), dtype=bool)
    for name, (low, high) in PLAUSIBLE_RANGES.items():
        plausible &= frame[name].between(low, high).to_numpy()
    report["implausible_labels_dropped"] = int((~plausible).sum())
    frame = frame[plausible].sort_values("formula").reset_index(drop=True)
    report["compositions_used"] = int(len(frame))
    return frame, report


def load_composition_data(folder: Path | None = None) -> CompositionData:
    """The joined composition data (cached in the cache folder after the first call)."""
    folder = folder or shared_data_dir() / OQMD_FOLDER
    stamp = hashlib.sha256(str(sorted((p.name, p.stat().st_size) for p in folder.glob("*.csv.gz"))).encode())
    cache = cache_dir() / f"ding_compositions_v{CACHE_VERSION}_{stamp.hexdigest()[:10]}.npz"
    if cache.exists():
        saved = np.load(cache, allow_pickle=False)
        import json

        return CompositionData(saved["formulas"], saved["counts"], saved["targets"], saved["validation"],
                               json.loads(str(saved["report"])))
    frame, report = _joined_frame(folder)
    formulas = frame["formula"].to_numpy().astype(str)
    counts = np.stack([count_vector(parse_formula(f)) for f in formulas]) if len(formulas) else \
        np.zeros((0, len(VOCABULARY)), dtype=np.int64)
    targets = frame[list(PROPERTIES)].to_numpy(dtype=np.float32)
    validation = np.array([formula_in_validation(f) for f in formulas], dtype=bool)
    report["train_count"], report["validation_count"] = int((~validation).sum()), int(validation.sum())
    import json

    np.savez_compressed(cache, formulas=formulas, counts=counts, targets=targets, validation=validation,
                        report=json.dumps(report))
    logger.info("DING data: %s", report)
    return CompositionData(formulas, counts, targets, validation, report)
