"""``crystal-designer evaluate hull``: accuracy of E_hull on held-out Materials Project crystals.

The reference hull is rebuilt from training-split rows only (``is_validation`` ids removed), so a
held-out crystal is never trivially on it. Truth: its DFT formation energy against that hull.
Routes: (a) the CGCNN formation-energy prediction; (b) CHGNet's energy turned into a formation
energy with per-element offsets fitted on training crystals (least squares, the correction from
CHGNet's MPtrj scale to the legacy MP formation energies of the hull). Both on the MP (DFT-relaxed)
structures and, for a subset, on the CHGNet-relaxed ones. Stable means E_hull <= 0.
"""

from __future__ import annotations

import json
import random
import time

import numpy as np

from app.engine.training.datasets import is_validation, shared_data_dir
from app.engine.training.hull_builder import hull_from_rows, read_mp_formation_energies, reference_elements


def _structures(ids: list[str]) -> dict:
    import tarfile
    from pathlib import Path

    from pymatgen.core import Structure

    wanted, out = set(ids), {}
    with tarfile.open(shared_data_dir() / "structures" / "mp_eform_gap" / "cifs.tar.gz", "r:gz") as tar:
        for member in tar:
            stem = Path(member.name).stem
            if stem in wanted:
                out[stem] = Structure.from_str(tar.extractfile(member).read().decode(), fmt="cif")
    return out


def _scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    ok = np.isfinite(predicted) & np.isfinite(truth)
    truth, predicted = truth[ok], predicted[ok]
    stable, called = truth <= 0, predicted <= 0
    tp = int(np.sum(stable & called))
    precision = tp / max(int(called.sum()), 1)
    recall = tp / max(int(stable.sum()), 1)
    return {"count": int(ok.sum()), "mae_eV_per_atom": round(float(np.mean(np.abs(truth - predicted))), 4),
            "f1_stable": round(2 * precision * recall / max(precision + recall, 1e-12), 3),
            "precision": round(precision, 3), "recall": round(recall, 3),
            "stable_fraction": round(float(stable.mean()), 3)}


def _reference_mu() -> dict:
    from app.engine.core.paths import models_dir

    return json.loads((models_dir() / "element_references.json").read_text())["energy_per_atom_eV"]


def _raw_formation(structure, chgnet_energy: float, mu: dict) -> tuple[float, dict]:
    amounts = structure.composition.fractional_composition.get_el_amt_dict()
    if any(s not in mu for s in amounts):  # no elemental reference energy (e.g. Yb): cannot be placed
        return float("nan"), amounts
    return chgnet_energy - sum(x * mu[s] for s, x in amounts.items()), amounts


def fit_chgnet_offsets(structures: list, dft_formation: list[float], device: str = "cpu") -> dict:
    """Per-element offsets c so that E_f(DFT) ≈ E_CHGNet − Σxμ + Σx c (least squares, eV/atom)."""
    from app.engine.stability.relax import chgnet_energies

    mu = _reference_mu()
    energies = chgnet_energies(structures, device=device)
    rows, residual, symbols = [], [], sorted({s for st in structures for s in st.composition.get_el_amt_dict()})
    column = {s: i for i, s in enumerate(symbols)}
    for structure, energy, target in zip(structures, energies, dft_formation):
        raw, amounts = _raw_formation(structure, energy, mu)
        if not np.isfinite(raw):
            continue
        row = np.zeros(len(symbols))
        for s, x in amounts.items():
            row[column[s]] = x
        rows.append(row)
        residual.append(target - raw)
    solution, *_ = np.linalg.lstsq(np.array(rows), np.array(residual), rcond=None)
    return {s: float(solution[column[s]]) for s in symbols}


def chgnet_formation(structures: list, energies: list[float], offsets: dict) -> np.ndarray:
    mu = _reference_mu()
    out = []
    for structure, energy in zip(structures, energies):
        raw, amounts = _raw_formation(structure, energy, mu)
        out.append(raw + sum(x * offsets[s] for s, x in amounts.items())
                   if np.isfinite(raw) and all(s in offsets for s in amounts) else np.nan)
    return np.array(out)


def evaluate_hull(n_chgnet: int = 300, n_fit: int = 1000, n_relax: int = 30, seed: int = 0,
                  device: str = "cpu") -> dict:
    """The report: MAE and F1 of each route, unrelaxed and relaxed inputs."""
    from app.engine.properties.predictor import PropertyPredictor
    from app.engine.stability.relax import chgnet_energies, relax_structures

    rows = read_mp_formation_energies()
    train = [r for r in rows if not is_validation(r[0])]
    held = [r for r in rows if is_validation(r[0])]
    began = time.perf_counter()
    hull = hull_from_rows(train, reference_elements())
    rng = random.Random(seed)
    held = rng.sample(held, min(n_chgnet, len(held)))
    fit = rng.sample(train, min(n_fit, len(train)))
    structures = _structures([r[0] for r in held + fit])
    held = [r for r in held if r[0] in structures]
    fit = [r for r in fit if r[0] in structures]
    truth = np.array([_e_hull(hull, r[1], r[2]) for r in held])
    held_structures = [structures[r[0]] for r in held]

    predictor = PropertyPredictor(device=device)
    cgcnn = [p["formation_energy_per_atom"] if not isinstance(p, Exception) else np.nan
             for p in predictor.predict(held_structures)]
    offsets = fit_chgnet_offsets([structures[r[0]] for r in fit], [r[2] for r in fit], device)
    chgnet = chgnet_formation(held_structures, chgnet_energies(held_structures, device=device), offsets)
    report = {
        "held_out": len(held), "hull_phases_without_held_out": len(hull), "fit_crystals": len(fit),
        "unrelaxed": {"cgcnn": _scores(truth, _hull_array(hull, held, cgcnn)),
                      "chgnet_fitted_offsets": _scores(truth, _hull_array(hull, held, chgnet))},
    }
    subset = list(range(min(n_relax, len(held))))
    results = relax_structures([held_structures[i] for i in subset], device=device)
    done = [i for i, r in zip(subset, results) if r.error is None]
    relaxed = [results[subset.index(i)].structure for i in done]
    sub_truth = truth[done]
    sub_rows = [held[i] for i in done]
    cg_relaxed = [p["formation_energy_per_atom"] if not isinstance(p, Exception) else np.nan
                  for p in predictor.predict(relaxed)]
    ch_relaxed = chgnet_formation(relaxed, [results[subset.index(i)].energy_per_atom for i in done], offsets)
    report["relaxed_subset"] = {
        "relaxed": len(done), "failed": len(subset) - len(done),
        "cgcnn_unrelaxed": _scores(sub_truth, _hull_array(hull, sub_rows, [cgcnn[i] for i in done])),
        "cgcnn_relaxed": _scores(sub_truth, _hull_array(hull, sub_rows, cg_relaxed)),
        "chgnet_unrelaxed": _scores(sub_truth, _hull_array(hull, sub_rows, list(chgnet[done]))),
        "chgnet_relaxed": _scores(sub_truth, _hull_array(hull, sub_rows, ch_relaxed)),
    }
    report["seconds"] = round(time.perf_counter() - began, 1)
    return report


def _e_hull(hull, formula: str, energy: float) -> float:
    result = hull.e_above_hull(formula, energy)
    return np.nan if result.e_above_hull is None else result.e_above_hull


def _hull_array(hull, rows, energies) -> np.ndarray:
    return np.array([_e_hull(hull, r[1], e) if np.isfinite(e) else np.nan for r, e in zip(rows, energies)])


def covalent_ratio_survey(folder=None) -> dict:
    """Smallest d / (rᵢ + rⱼ) of every indexed training crystal (``models/structure_index.npz``):
    the covalent-distance fraction must stay below the smallest of them."""
    from pymatgen.core import Lattice, Structure

    from app.engine.core.paths import models_dir
    from app.engine.stability.relax import min_covalent_ratio

    with np.load((folder or models_dir()) / "structure_index.npz") as data:
        lattices, offsets, numbers = data["lattices"], data["site_offsets"], data["numbers"]
        coords, ids = data["frac_coords"].astype(float) / 65536.0, data["ids"]
    ratios = []
    for i in range(len(lattices)):
        span = slice(offsets[i], offsets[i + 1])
        structure = Structure(Lattice(lattices[i]), numbers[span].tolist(), coords[span])
        ratios.append(min_covalent_ratio(structure))
    ratios = np.array(ratios)
    order = np.argsort(ratios)[:5]
    return {"structures": len(ratios), "smallest": [(str(ids[i]), round(float(ratios[i]), 3)) for i in order],
            "fraction_failing_at": {f: float(np.mean(ratios < f)) for f in (0.5, 0.6, 0.65, 0.7)}}
