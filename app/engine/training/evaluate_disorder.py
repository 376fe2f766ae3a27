"""Which disorder approximation predicts better: measured on artificially disordered crystals.

Held-out (validation-split) Materials Project crystals with two chemically similar elements
A and B (both metals or both non-metals, electronegativities within 0.6) get every A and B
site replaced by the mixed site A_x B_(1-x) of the same overall composition. The ordered
original is then one ordering of that disordered crystal, and its DFT labels are the truth.
Each approximation of :mod:`app.engine.properties.disorder` is compared with the DFT labels and
with the model's own prediction for the ordered original (the best an approximation can do).

    python -m app.engine.training.evaluate_disorder --n 150
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings

import numpy as np
from pymatgen.core import Element, Structure

from app.engine.properties.disorder import predict_approximant, predict_virtual_crystal
from app.engine.properties.predictor import PropertyPredictor
from app.engine.training.datasets import is_validation, read_mp_eform_gap, shared_data_dir, to_structure

logger = logging.getLogger(__name__)
TARGETS = ("formation_energy_per_atom", "band_gap")


def mixing_pair(structure: Structure) -> tuple[str, str] | None:
    """The two most similar elements of ``structure`` (same metal/non-metal class, Δχ ≤ 0.6)."""
    elements = sorted(structure.composition.elements, key=lambda e: e.symbol)
    best = None
    for i, a in enumerate(elements):
        for b in elements[i + 1:]:
            if a.is_metal != b.is_metal or not (a.X == a.X and b.X == b.X):  # X is NaN for noble gases
                continue
            gap = abs(a.X - b.X)
            if gap <= 0.6 and (best is None or gap < best[0]):
                best = (gap, a.symbol, b.symbol)
    return None if best is None else (best[1], best[2])


def disorder_pair(structure: Structure, a: str, b: str) -> Structure:
    """``structure`` with every A and B site replaced by the mixed site of the same composition."""
    counts = structure.composition.get_el_amt_dict()
    x = counts[a] / (counts[a] + counts[b])
    mixed = {a: x, b: 1.0 - x}
    species = [mixed if site.specie.symbol in (a, b) else site.species for site in structure]
    return Structure(structure.lattice, species, structure.frac_coords)


def evaluate(n: int, max_sites: int = 16) -> dict:
    predictor = PropertyPredictor(device="cpu")
    rows = []
    pick = np.random.default_rng(0)
    started = time.monotonic()
    for record in read_mp_eform_gap(shared_data_dir()):
        if len(rows) >= n:
            break
        if not is_validation(record.material_id):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = to_structure(record)
        pair = mixing_pair(structure) if len(structure) <= max_sites else None
        if pair is None:
            continue
        disordered = disorder_pair(structure, *pair)
        ordered = predictor.predict([structure])[0].values
        approximant = predict_approximant(predictor, disordered)
        virtual = predict_virtual_crystal(predictor, disordered)
        rows.append({"id": record.material_id, "formula": structure.composition.reduced_formula, "pair": pair,
                     "labels": {t: record.labels[t] for t in TARGETS}, "ordered": {t: ordered[t] for t in TARGETS},
                     "approximant": {t: approximant.values[t] for t in TARGETS},
                     "virtual_crystal": {t: virtual.values[t] for t in TARGETS},
                     # The same orderings without the energy criterion: one picked at random.
                     "random_ordering": {t: approximant.orderings[pick.integers(len(approximant.orderings))].values[t]
                                         for t in TARGETS},
                     "supercell": approximant.supercell, "n_orderings": len(approximant.orderings)})
    return summarise(rows, time.monotonic() - started)


def summarise(rows: list[dict], seconds: float) -> dict:
    report: dict = {"n_crystals": len(rows), "seconds": round(seconds, 1), "mae_vs_dft": {}, "mae_vs_ordered_prediction": {}}
    for method in ("ordered", "approximant", "random_ordering", "virtual_crystal"):
        for target in TARGETS:
            labels = np.array([r["labels"][target] for r in rows], dtype=float)
            predicted = np.array([r[method][target] for r in rows], dtype=float)
            ok = np.isfinite(labels) & np.isfinite(predicted)
            report["mae_vs_dft"].setdefault(method, {})[target] = round(float(np.mean(np.abs(predicted - labels)[ok])), 4)
            if method != "ordered":
                reference = np.array([r["ordered"][target] for r in rows], dtype=float)
                report["mae_vs_ordered_prediction"].setdefault(method, {})[target] = round(
                    float(np.mean(np.abs(predicted - reference))), 4)
    report["rows"] = rows
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=150, help="number of held-out crystals")
    parser.add_argument("--out", default=None, help="write the full report (JSON) here")
    args = parser.parse_args()
    report = evaluate(args.n)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
