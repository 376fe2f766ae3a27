"""Build the shipped reference convex hull (``models/reference_hull.npz``) and measure it.

Phases: the Materials Project (legacy) formation energies of ``mp_eform_gap`` (formula from each
CIF's ``_chemical_formula_sum``), the lowest per reduced formula, plus every element of the PBE
reference file at 0 eV/atom; only phases on the hull of their own chemical system are kept.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import re
import tarfile
import time
from pathlib import Path

import numpy as np

from app.engine.core.paths import models_dir
from app.engine.stability.formation import DEFAULT_HULL_ENERGY
from app.engine.stability.hull import HULL_FILE, HULL_NAME, ReferenceHull
from app.engine.training.datasets import shared_data_dir

logger = logging.getLogger(__name__)

_FORMULA_SUM = re.compile(r"_chemical_formula_sum\s+'?([^'\n]+)'?")
#: Phases this close to their own chemical system's hull (eV/atom) are kept as hull phases.
ON_HULL_TOLERANCE = 1e-6


def read_mp_formation_energies(root: Path | None = None) -> list[tuple[str, str, float]]:
    """``(mp_id, formula, formation energy eV/atom)`` of every ``mp_eform_gap`` row."""
    folder = (root or shared_data_dir()) / "structures" / "mp_eform_gap"
    formulas = {}
    with tarfile.open(folder / "cifs.tar.gz", "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".cif"):
                head = tar.extractfile(member).read(4096).decode(errors="replace")
                found = _FORMULA_SUM.search(head)
                if found:
                    formulas[Path(member.name).stem] = found.group(1).strip()
    rows = []
    with gzip.open(folder / "properties.csv.gz", "rt") as handle:
        for row in csv.DictReader(handle):
            try:
                energy = float(row["formation_energy_per_atom"])
            except ValueError:
                continue
            if row["mp_id"] in formulas and np.isfinite(energy):
                rows.append((row["mp_id"], formulas[row["mp_id"]], energy))
    return rows


def reference_elements(root: Path | None = None) -> list[str]:
    """Elements with a PBE reference phase."""
    with gzip.open((root or shared_data_dir()) / "references" / "mp_pbe_element_refs.json.gz", "rt") as handle:
        return sorted(json.load(handle))


def hull_from_rows(rows, elements) -> ReferenceHull:
    """A hull of every phase in ``rows`` (lowest per reduced formula) plus ``elements`` at 0 eV/atom,
    before pruning; phases with an element outside ``elements`` are left out."""
    from pymatgen.core import Composition

    column = {symbol: i for i, symbol in enumerate(elements)}
    best: dict[str, tuple[float, str, dict]] = {}
    for material_id, formula, energy in rows:
        composition = Composition(formula)
        amounts = composition.fractional_composition.get_el_amt_dict()
        if any(symbol not in column for symbol in amounts):
            continue
        reduced = composition.reduced_formula
        if reduced not in best or energy < best[reduced][0]:
            best[reduced] = (energy, material_id, amounts)
    for symbol in elements:  # the elemental reference phases define 0 eV/atom
        if symbol not in best or best[symbol][0] > 0:
            best[symbol] = (0.0, f"reference-{symbol}", {symbol: 1.0})
    fractions = np.zeros((len(best), len(elements)))
    energies, formulas, ids = [], [], []
    for row, (reduced, (energy, material_id, amounts)) in enumerate(sorted(best.items())):
        for symbol, x in amounts.items():
            fractions[row, column[symbol]] = x
        energies.append(energy)
        formulas.append(reduced)
        ids.append(material_id)
    return ReferenceHull(elements, fractions, np.array(energies), formulas, ids)


def prune_to_hull(hull: ReferenceHull) -> ReferenceHull:
    """Only the phases on the hull of their own chemical system (the others never bound anything)."""
    keep = []
    for i, formula in enumerate(hull.formulas):
        result = hull.e_above_hull(formula, hull.energies[i])
        if result.e_above_hull is not None and result.e_above_hull <= ON_HULL_TOLERANCE:
            keep.append(i)
    return ReferenceHull(hull.elements, hull.fractions[keep], hull.energies[keep],
                         [hull.formulas[i] for i in keep], [hull.ids[i] for i in keep])


def build_reference_hull(data_root: Path | None = None, output_dir: Path | None = None) -> Path:
    """Write ``reference_hull.npz``, its manifest entry and its card; returns the file's path."""
    from app.engine.core.registry import save_manifest_entry, sha256_of

    folder = output_dir or models_dir()
    rows = read_mp_formation_energies(data_root)
    full = hull_from_rows(rows, reference_elements(data_root))
    began = time.perf_counter()
    hull = prune_to_hull(full)
    prune_seconds = time.perf_counter() - began
    path = hull.save(folder / HULL_FILE)
    began = time.perf_counter()
    ReferenceHull.load(folder)
    load_seconds = time.perf_counter() - began
    entry = {
        "file": HULL_FILE,
        "sha256": sha256_of(path),
        "kind": "reference_hull",
        "description": "Convex hull of formation energies: phases on the hull of their chemical system.",
        "architecture": {"format": "npz", "arrays": ["elements", "energies", "formulas", "ids", "entry_of",
                                                      "element_of", "fraction"]},
        "units": {"energies": "eV/atom (formation energy, legacy Materials Project scale)"},
        "data": {"sources": ["mp_eform_gap: legacy MP formation energies (~2018), CC-BY-4.0",
                             "references/mp_pbe_element_refs.json.gz: elements at 0 eV/atom"],
                 "rows": len(rows), "distinct_formulas": len(full), "hull_phases": len(hull)},
        "split": {"note": "all rows (a reference, not a model); evaluations remove held-out ids first"},
        "epochs": 0,
        "metrics": {"load_seconds": round(load_seconds, 4), "build_prune_seconds": round(prune_seconds, 1)},
        "card": "reference_hull.md",
        "created": time.strftime("%Y-%m-%d"),
    }
    from app.engine.core.registry import load_manifest

    previous = load_manifest(folder).get(HULL_NAME, {}) if (folder / "manifest.json").exists() else {}
    if "evaluate_hull" in previous.get("metrics", {}):  # its own rebuild of the hull: still valid
        entry["metrics"]["evaluate_hull"] = previous["metrics"]["evaluate_hull"]
    save_manifest_entry(HULL_NAME, entry, folder)
    (folder / "reference_hull.md").write_text(_card(entry))
    return path


#: The command whose figures :func:`record_evaluation` stores.
EVALUATE_COMMAND = "crystal-designer evaluate hull --n-held-out 300 --record"


def record_evaluation(report: dict, folder: Path | None = None, command: str = EVALUATE_COMMAND) -> dict:
    """Store the E_hull accuracy of an ``evaluate_hull`` report in the hull's manifest entry and card.

    Keeps MAE (eV/atom) and F1 of stable (E_hull <= 0) of every route and input on the
    like-for-like relaxed subset, the best route, the sizes and the command; re-reads the manifest
    right before writing so other entries are untouched. Returns the stored figures.
    """
    from app.engine.core.registry import load_manifest, save_manifest_entry

    folder = folder or models_dir()
    figures = {
        "command": command, "held_out": report["held_out"], "max_sites": report["max_sites"],
        "relaxed_subset": report.get("relaxed_count", report["held_out"] - report.get("relax_failed", 0)),
        "best_by_mae": report["best_by_mae"],
        "routes": {key: {"mae_eV_per_atom": value.get("mae_eV_per_atom"), "f1_stable": value.get("f1_stable"),
                         "count": value.get("count")}
                   for key, value in report["relaxed_subset_all_inputs"].items()},
        "seconds": report.get("seconds"), "cpu_seconds": report.get("cpu_seconds"),
        "load_average_1min_at_end": report.get("load_average_1min_at_end"),
        "default_route": DEFAULT_HULL_ENERGY,
        "chgnet_weight": report.get("chgnet_weight"),
    }
    entry = load_manifest(folder)[HULL_NAME]
    entry.setdefault("metrics", {})["evaluate_hull"] = figures
    save_manifest_entry(HULL_NAME, entry, folder)
    (folder / "reference_hull.md").write_text(_card(entry))
    return figures


def _evaluation_text(figures: dict | None) -> str:
    if not figures:
        return ""
    lines = [f"\n## Accuracy of E_hull (held-out Materials Project crystals)\n\n"
             f"`{figures['command']}`: {figures['held_out']} held-out crystals of at most {figures['max_sites']} "
             f"sites (hull rebuilt without them), truth = their DFT formation energy against that hull; "
             f"figures on the {figures['relaxed_subset']} that also relaxed from a 3 % strained, 0.05 Å rattled "
             f"copy (as decoded candidates come). Stable = E_hull <= 0.\n\n"
             "| route / input | crystals | MAE (eV/atom) | F1 stable |\n|---|---|---|---|\n"]
    for key, value in figures["routes"].items():
        lines.append(f"| {key} | {value['count']} | {value['mae_eV_per_atom']} | {value['f1_stable']} |\n")
    weight = figures.get("chgnet_weight")
    mean = (f"{weight:g} × `chgnet` + {1 - weight:g} × `cgcnn`" if weight is not None
            else "of `chgnet` and `cgcnn`")
    lines.append(f"\nBest by MAE: `{figures['best_by_mae']}`. Routes: `cgcnn` predicted formation energy; "
                 "`chgnet` CHGNet energy minus the PBE elemental references plus the shipped corrections "
                 "(`chgnet_corrections.json`, fitted on training-split crystals only); `chgnet_uncorrected` "
                 "without them; `chgnet_mp2020` the uncorrected one after pymatgen's MP2020 corrections "
                 "(CHGNet's MPtrj labels already carry them, so this counts them twice); `mean` the product's "
                 f"weighted mean {mean} (weight chosen on other held-out crystals, "
                 "`evaluate hull --calibrate`); `equal_mean` their plain mean, `mean_uncorrected` the plain mean "
                 "of `cgcnn` and `chgnet_uncorrected`. Default for "
                 f"relaxed crystals (generate, predict --relax): `{figures.get('default_route')}`. "
                 f"Took {figures['seconds']} s "
                 f"({figures['cpu_seconds']} CPU s, one thread; load average {figures['load_average_1min_at_end']}).\n")
    return "".join(lines)


def _card(entry: dict) -> str:
    data = entry["data"]
    return (
        "# reference_hull\n\n"
        "Convex hull of formation energies per atom used for `e_above_hull` and `decomposition`.\n\n"
        f"- Data: {data['rows']} Materials Project (legacy, ~2018) formation energies of `mp_eform_gap` "
        f"({data['distinct_formulas']} formulas incl. elements at 0 eV/atom), "
        f"{data['hull_phases']} phases on the hull kept.\n"
        "- Units: eV/atom; E_hull < 0 means below the reference hull.\n"
        f"- Load time: {entry['metrics']['load_seconds']} s.\n"
        "- Limits: one DFT vintage (legacy MP, GGA/GGA+U with the legacy corrections); elements without a "
        "PBE reference phase cannot be placed. Accuracy of the E_hull routes: `crystal-designer evaluate hull`.\n"
        "- Rebuild: `crystal-designer build-index`.\n"
        + _evaluation_text(entry.get("metrics", {}).get("evaluate_hull"))
    )
