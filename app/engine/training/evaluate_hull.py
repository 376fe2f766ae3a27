"""``crystal-designer evaluate hull``: accuracy of E_hull on held-out Materials Project crystals.

The reference hull is rebuilt from training-split rows only (``is_validation`` ids removed), so a
held-out crystal is never trivially on it. Truth: its DFT formation energy against that hull.
Routes to a formation energy:

- ``cgcnn``: the shipped CGCNN formation-energy prediction;
- ``chgnet``: CHGNet's energy minus the PBE elemental references plus the shipped corrections
  (``models/chgnet_corrections.json``, fitted on training-split crystals only by
  ``crystal-designer build-index``); what the product uses;
- ``chgnet_uncorrected``: the same without the corrections;
- ``chgnet_mp2020``: the uncorrected one after pymatgen's ``MaterialsProject2020Compatibility``
  (what a raw GGA/GGA+U energy would need; applied to CHGNet it counts the corrections twice);
- ``mean``: the product's default, ``w · chgnet + (1 − w) · cgcnn`` (two independent estimates)
  with the shipped ``w`` (:data:`app.engine.stability.formation.CHGNET_HULL_WEIGHT`), which
  :func:`calibrate_hull_weight` chooses on held-out crystals disjoint from the evaluated ones;
  ``equal_mean`` their plain mean; ``mean_uncorrected`` the plain mean of ``cgcnn`` and
  ``chgnet_uncorrected``.

Inputs: the MP (DFT-relaxed) structures; the same strained by 3 % and rattled by 0.05 Å, as
decoded candidates come (unrelaxed); and those relaxed with CHGNet (what relaxed candidates get).
Stable means E_hull <= 0. Crystals of at most ``max_sites`` sites (the generator's candidates are
5–20 atoms) keep the evaluation within minutes on one core.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np

from app.engine.stability.formation import CHGNET_HULL_WEIGHT, weighted_formation
from app.engine.training.datasets import is_validation
from app.engine.training.element_references import as_candidate, read_mp_structures
from app.engine.training.hull_builder import hull_from_rows, read_mp_formation_energies, reference_elements


def _scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    truth, predicted = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
    ok = np.isfinite(predicted) & np.isfinite(truth)
    truth, predicted = truth[ok], predicted[ok]
    if not len(truth):
        return {"count": 0}
    stable, called = truth <= 0, predicted <= 0
    tp = int(np.sum(stable & called))
    precision = tp / max(int(called.sum()), 1)
    recall = tp / max(int(stable.sum()), 1)
    return {"count": int(ok.sum()), "mae_eV_per_atom": round(float(np.mean(np.abs(truth - predicted))), 4),
            "f1_stable": round(2 * precision * recall / max(precision + recall, 1e-12), 3),
            "precision": round(precision, 3), "recall": round(recall, 3),
            "stable_fraction": round(float(stable.mean()), 3)}


def _corrected(function, structures: list, energies) -> np.ndarray:
    out = []
    for structure, energy in zip(structures, energies):
        value = None
        if energy is not None and np.isfinite(energy):
            value, _ = function(structure, float(energy))
        out.append(np.nan if value is None else value)
    return np.array(out)


def _small(rows: list, structures: dict, count: int, max_sites: int) -> list:
    return [r for r in rows if r[0] in structures and len(structures[r[0]]) <= max_sites][:count]


def _routes(predictor, inputs: list, energies) -> dict:
    """Formation energy (eV/atom, NaN where unknown) of ``inputs`` by every route, ``{route: (n,)}``;
    ``energies`` are their CHGNet energies per atom."""
    from app.engine.stability.formation import chgnet_formation_energy, mp2020_formation_energy

    def uncorrected(structure, energy):
        return chgnet_formation_energy(structure, energy, corrected=False)

    predicted = predictor.predict(inputs)
    cgcnn = [np.nan if isinstance(p, Exception) else p["formation_energy_per_atom"] for p in predicted]
    out = {"cgcnn": np.array(cgcnn, dtype=float),
           "chgnet": _corrected(chgnet_formation_energy, inputs, energies),
           "chgnet_uncorrected": _corrected(uncorrected, inputs, energies),
           "chgnet_mp2020": _corrected(mp2020_formation_energy, inputs, energies)}
    out["mean"] = weighted_formation(out["cgcnn"], out["chgnet"])  # the product's default
    out["equal_mean"] = weighted_formation(out["cgcnn"], out["chgnet"], 0.5)
    out["mean_uncorrected"] = weighted_formation(out["cgcnn"], out["chgnet_uncorrected"], 0.5)
    return out


def _draw(rows: list, count: int, seed: int) -> list:
    """``3 × count`` rows drawn at random (room for the size filter), in draw order."""
    return random.Random(seed).sample(rows, min(3 * count, len(rows)))


def held_out_sample(rows: list, count: int, seed: int, max_sites: int, exclude: frozenset = frozenset()):
    """Up to ``count`` validation-split MP rows ``(id, formula, Ef)`` of at most ``max_sites`` sites
    (ids in ``exclude`` left out), and their structures ``{id: Structure}``."""
    held = [r for r in rows if is_validation(r[0]) and r[0] not in exclude]
    held = _draw(held, count, seed)
    structures = read_mp_structures([r[0] for r in held])
    return _small(held, structures, count, max_sites), structures


def evaluate_hull(n_chgnet: int = 300, n_relax: int | None = None, seed: int = 0,
                  device: str = "cpu", max_sites: int = 24, progress=None) -> dict:
    """The report: MAE and F1 of stable (E_hull <= 0) per route and input, with the best route.

    Parameters
    ----------
    n_chgnet : int
        Held-out crystals evaluated.
    n_relax : int, optional
        Held-out crystals (the first of them) also strained, rattled and relaxed with CHGNet
        (default: all of them).
    max_sites : int
        Largest crystal (sites per cell) drawn.
    """
    from app.engine.properties.predictor import PropertyPredictor
    from app.engine.stability.relax import chgnet_energies, relax_structures

    began, cpu_began = time.perf_counter(), time.process_time()
    say = progress or (lambda message: None)
    rows = read_mp_formation_energies()
    train = [r for r in rows if not is_validation(r[0])]
    hull = hull_from_rows(train, reference_elements())
    held, structures = held_out_sample(rows, n_chgnet, seed, max_sites)
    say(f"{len(held)} held-out crystals read")
    truth = np.array([_e_hull(hull, r[1], r[2]) for r in held])
    mp_structures = [structures[r[0]] for r in held]
    predictor = PropertyPredictor(device=device)

    formation = {"mp_structures": _routes(predictor, mp_structures, chgnet_energies(mp_structures, device=device))}
    subset = list(range(len(held) if n_relax is None else min(n_relax, len(held))))
    candidates = [as_candidate(mp_structures[i], seed + i) for i in subset]
    formation["strained_unrelaxed"] = _routes(predictor, candidates, chgnet_energies(candidates, device=device))
    say("unrelaxed routes done; relaxing")
    relax_began = time.perf_counter()
    results = relax_structures(candidates, device=device)
    relax_seconds = time.perf_counter() - relax_began
    done = [k for k, r in enumerate(results) if r.error is None]
    relaxed = [results[k].structure for k in done]
    relaxed_routes = _routes(predictor, relaxed, [results[k].energy_per_atom for k in done])
    formation["relaxed"] = {name: _spread(values, done, len(subset)) for name, values in relaxed_routes.items()}

    report = {"held_out": len(held), "max_sites": max_sites, "chgnet_weight": CHGNET_HULL_WEIGHT,
              "hull_phases_without_held_out": len(hull),
              "relaxed_count": len(done), "relax_failed": len(subset) - len(done),
              "relax_seconds": round(relax_seconds, 1),
              "relax_mean_steps": round(float(np.mean([r.steps for r in results])), 1) if results else None}
    for inputs, by_route in formation.items():
        rows_here = held if inputs == "mp_structures" else [held[i] for i in subset]
        reference = truth if inputs == "mp_structures" else truth[subset]
        report[inputs] = {name: _scores(reference, _hull_array(hull, rows_here, values))
                          for name, values in by_route.items()}
    # Like for like: every route and input on the relaxed subset.
    same = np.array(done, dtype=int)
    report["relaxed_subset_all_inputs"] = {
        f"{name}/{inputs}": _scores(truth[same], _hull_array(hull, [held[i] for i in same], values[same]))
        for inputs, by_route in formation.items() for name, values in by_route.items()}
    ranked = sorted(((scores.get("mae_eV_per_atom", np.inf), key) for key, scores in
                     report["relaxed_subset_all_inputs"].items() if scores.get("count")))
    report["best_by_mae"] = ranked[0][1] if ranked else None
    report["seconds"] = round(time.perf_counter() - began, 1)
    report["cpu_seconds"] = round(time.process_time() - cpu_began, 1)
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    return report


def calibrate_hull_weight(n_calibration: int = 300, n_evaluated: int = 300, seed: int = 1, device: str = "cpu",
                          max_sites: int = 24, weight_step: float = 0.05, progress=None) -> dict:
    """CHGNet's share ``w`` of the relaxed candidates' hull energy ``w · chgnet + (1 − w) · cgcnn``.

    Calibration crystals: validation-split MP crystals, none of them among the rows
    :func:`evaluate_hull` draws for ``n_evaluated`` held-out crystals (seed 0), so the weight is
    chosen on other crystals than those it is then measured on. Each is strained, rattled and
    relaxed with CHGNet exactly as in :func:`evaluate_hull` (what a candidate gets), and ``w``
    minimises the E_hull MAE over a grid of step ``weight_step`` (the MAE, a smooth criterion; F1
    of 300 crystals moves by ±0.02 with a handful of them).

    Returns
    -------
    dict
        ``{"weights": [{"w", "mae_eV_per_atom", "f1_stable", ...}], "best_weight", "calibration_crystals", ...}``.
    """
    from app.engine.properties.predictor import PropertyPredictor
    from app.engine.stability.relax import relax_structures

    began = time.perf_counter()
    say = progress or (lambda message: None)
    rows = read_mp_formation_energies()
    hull = hull_from_rows([r for r in rows if not is_validation(r[0])], reference_elements())
    evaluated = frozenset(r[0] for r in _draw([r for r in rows if is_validation(r[0])], n_evaluated, 0))
    held, structures = held_out_sample(rows, n_calibration, seed, max_sites, exclude=evaluated)
    say(f"{len(held)} calibration crystals read")
    truth = np.array([_e_hull(hull, r[1], r[2]) for r in held])
    candidates = [as_candidate(structures[r[0]], seed + i) for i, r in enumerate(held)]
    results = relax_structures(candidates, device=device)
    done = [k for k, r in enumerate(results) if r.error is None]
    found = _routes(PropertyPredictor(device=device), [results[k].structure for k in done],
                    [results[k].energy_per_atom for k in done])
    rows_done, truth_done = [held[k] for k in done], truth[done]
    table = []
    for w in np.round(np.arange(0.0, 1.0 + 1e-9, weight_step), 4):
        energies = weighted_formation(found["cgcnn"], found["chgnet"], w)
        scores = _scores(truth_done, _hull_array(hull, rows_done, energies))
        table.append({"w": float(w), **scores})
    best = min(table, key=lambda row: row.get("mae_eV_per_atom", np.inf))
    return {"calibration_crystals": len(held), "relaxed": len(done), "excluded_evaluation_draw": len(evaluated),
            "max_sites": max_sites, "weights": table, "best_weight": best["w"],
            "best": best, "seconds": round(time.perf_counter() - began, 1),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2)}


def _spread(values: np.ndarray, done: list[int], size: int) -> np.ndarray:
    """Values of the relaxed crystals placed at their subset positions (NaN where it failed)."""
    out = np.full(size, np.nan)
    out[np.array(done, dtype=int)] = values
    return out


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
