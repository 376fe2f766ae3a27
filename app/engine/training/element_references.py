"""Elemental reference energies (PBE, eV/atom) for turning formation energies into total energies."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

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


#: Strain and rattle (Å) that make an MP crystal look like an unrelaxed decoded candidate; the
#: corrections are fitted on CHGNet relaxations from such copies, the energies relaxed candidates get.
CANDIDATE_STRAIN = 0.03
CANDIDATE_RATTLE = 0.05
#: Ridge penalties tried (eV² per unit offset²), chosen by 5-fold cross-validation on the fit crystals.
RIDGE_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
#: Crystals whose residual is farther than this from the first fit's (eV/atom) are left out of the
#: second: CHGNet's rare failures must not pull every offset.
OUTLIER_RESIDUAL = 0.5
_ENERGY_CACHE = "chgnet_fit_energies_v1.json"


def as_candidate(structure, seed: int):
    """``structure`` strained by :data:`CANDIDATE_STRAIN` and rattled by :data:`CANDIDATE_RATTLE` Å."""
    strained = structure.copy()
    strained.apply_strain(CANDIDATE_STRAIN)
    strained.perturb(CANDIDATE_RATTLE, seed=seed)
    return strained


def read_mp_structures(ids) -> dict:
    """``{mp_id: Structure}`` of ``ids`` from ``mp_eform_gap/cifs.tar.gz``."""
    import tarfile
    import warnings

    from pymatgen.core import Structure

    wanted, out = set(ids), {}
    with tarfile.open(shared_data_dir() / "structures" / "mp_eform_gap" / "cifs.tar.gz", "r:gz") as tar, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for member in tar:
            stem = Path(member.name).stem
            if stem in wanted:
                out[stem] = Structure.from_str(tar.extractfile(member).read().decode(), fmt="cif")
    return out


def relaxed_chgnet_energies(ids: list[str], structures: dict, device: str = "cpu", chunk: int = 100,
                            progress=None) -> dict[str, float | None]:
    """CHGNet energy per atom (eV/atom) of each id's structure relaxed from a strained, rattled copy
    (None where the relaxation failed); cached in ``cache_dir()`` per id, so a rerun resumes."""
    from app.engine.core.paths import cache_dir
    from app.engine.stability.relax import relax_structures

    path = cache_dir() / _ENERGY_CACHE
    cached = json.loads(path.read_text()) if path.is_file() else {}
    todo = [i for i in ids if i not in cached]
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        results = relax_structures([as_candidate(structures[i], seed=k + start) for k, i in enumerate(part)],
                                   device=device)
        for i, result in zip(part, results):
            cached[i] = result.energy_per_atom if result.error is None else None
        path.write_text(json.dumps(cached))
        if progress:
            progress(f"relaxed {min(start + chunk, len(todo))} of {len(todo)} fitting crystals")
    return {i: cached[i] for i in ids}


def _design(compositions, terms: list[str]) -> np.ndarray:
    from app.engine.stability.formation import correction_features

    column = {term: k for k, term in enumerate(terms)}
    design = np.zeros((len(compositions), len(terms)))
    for row, composition in enumerate(compositions):
        for term, x in correction_features(composition).items():
            design[row, column[term]] = x
    return design


def _ridge(design: np.ndarray, residual: np.ndarray, penalty: float) -> np.ndarray:
    gram = design.T @ design + penalty * len(residual) * np.eye(design.shape[1])
    return np.linalg.solve(gram, design.T @ residual)


def _cross_validated_mae(design, residual, penalty, folds: int = 5, seed: int = 0) -> float:
    order = np.random.default_rng(seed).permutation(len(residual))
    errors = []
    for fold in range(folds):
        test = order[fold::folds]
        train = np.setdiff1d(order, test)
        offsets = _ridge(design[train], residual[train], penalty)
        errors.append(np.abs(design[test] @ offsets - residual[test]))
    return float(np.mean(np.concatenate(errors)))


def fit_chgnet_corrections(n_fit: int = 1500, seed: int = 0, max_sites: int = 24, device: str = "cpu",
                           output_dir: Path | None = None, progress=None) -> Path:
    """Fit and write ``chgnet_corrections.json``: offsets c so that, on training-split crystals,
    E_f(MP, legacy) ≈ E_CHGNet(relaxed) − Σ xᵢ μᵢ + Σ_t x_t c_t (eV/atom), and its manifest entry and card.

    Parameters
    ----------
    n_fit : int
        Training-split MP crystals (of at most ``max_sites`` sites) fitted on; validation ids are
        never read, so ``crystal-designer evaluate hull`` measures the corrections on unseen crystals.
    seed : int
        Which crystals are drawn.
    """
    import random
    import time

    from app.engine.stability.formation import (CORRECTIONS_FILE, chgnet_formation_energy,
                                                element_reference_energies)
    from app.engine.training.datasets import is_validation
    from app.engine.training.hull_builder import read_mp_formation_energies

    say = progress or (lambda message: None)
    began, cpu_began = time.perf_counter(), time.process_time()
    references = element_reference_energies(output_dir or models_dir())
    rows = [r for r in read_mp_formation_energies() if not is_validation(r[0])]
    drawn = random.Random(seed).sample(rows, min(3 * n_fit, len(rows)))
    structures = read_mp_structures([r[0] for r in drawn])
    fit = [r for r in drawn if r[0] in structures and len(structures[r[0]]) <= max_sites
           and all(e.symbol in references for e in structures[r[0]].composition.elements)][:n_fit]
    say(f"{len(fit)} training crystals drawn; relaxing")
    energies = relaxed_chgnet_energies([r[0] for r in fit], structures, device=device, progress=say)
    fit = [r for r in fit if energies[r[0]] is not None]
    compositions = [structures[r[0]].composition for r in fit]
    raw = np.array([chgnet_formation_energy(structures[r[0]], energies[r[0]], corrected=False)[0] for r in fit])
    residual = np.array([r[2] for r in fit]) - raw
    terms = sorted({term for c in compositions for term in _correction_terms(c)})
    design = _design(compositions, terms)
    scores = {penalty: _cross_validated_mae(design, residual, penalty) for penalty in RIDGE_GRID}
    penalty = min(scores, key=scores.get)
    offsets = _ridge(design, residual, penalty)
    inliers = np.abs(design @ offsets - residual) <= OUTLIER_RESIDUAL
    offsets = _ridge(design[inliers], residual[inliers], penalty)
    corrected = np.abs(design @ offsets - residual)
    counts = (design > 0).sum(axis=0)
    folder = output_dir or models_dir()
    path = folder / CORRECTIONS_FILE
    report = {
        "description": "Offsets (eV per atom of each term) added to CHGNet energy minus the PBE elemental "
                       "references to give formation energies on the reference hull's legacy MP scale; "
                       "term 'X+U' is a Hubbard-U metal in an oxide or fluoride.",
        "offsets_eV_per_atom": {term: round(float(c), 5) for term, c in zip(terms, offsets)},
        "crystals_per_term": {term: int(n) for term, n in zip(terms, counts)},
        "fit": {"crystals": len(fit), "inliers": int(inliers.sum()), "ridge_penalty": penalty,
                "cross_validated_mae_by_penalty": {str(k): round(v, 4) for k, v in scores.items()},
                "training_mae_uncorrected_eV_per_atom": round(float(np.mean(np.abs(residual))), 4),
                "training_mae_corrected_eV_per_atom": round(float(np.mean(corrected)), 4),
                "seed": seed, "max_sites": max_sites, "strain": CANDIDATE_STRAIN, "rattle_A": CANDIDATE_RATTLE,
                "seconds": round(time.perf_counter() - began, 1),
                "cpu_seconds": round(time.process_time() - cpu_began, 1)},
    }
    path.write_text(json.dumps(report, indent=1) + "\n")
    write_corrections_entry(folder)
    say(f"wrote {path}")
    return path


def _correction_terms(composition) -> list[str]:
    from app.engine.stability.formation import correction_features

    return list(correction_features(composition))


def write_corrections_entry(folder: Path | None = None, held_out: dict | None = None) -> dict:
    """Write the manifest entry and card of ``chgnet_corrections.json`` (re-reads the manifest and
    changes only this entry); ``held_out`` adds figures of ``crystal-designer evaluate hull``."""
    import time

    from app.engine.core.registry import load_manifest, save_manifest_entry, sha256_of
    from app.engine.stability.formation import CORRECTIONS_FILE, CORRECTIONS_NAME

    folder = folder or models_dir()
    path = folder / CORRECTIONS_FILE
    stored = json.loads(path.read_text())
    fit = stored["fit"]
    previous = load_manifest(folder).get(CORRECTIONS_NAME, {}) if (folder / "manifest.json").exists() else {}
    held_out = held_out or previous.get("metrics", {}).get("held_out")
    entry = {
        "file": CORRECTIONS_FILE, "sha256": sha256_of(path), "kind": "fitted_corrections",
        "description": "Per-term offsets putting CHGNet formation energies on the reference hull's legacy MP scale.",
        "architecture": {"terms": len(stored["offsets_eV_per_atom"]), "model": "ridge least squares",
                         "features": "atom fraction per element; Hubbard-U metals in oxides/fluorides separate"},
        "units": {"offsets_eV_per_atom": "eV per atom of the term (multiplied by its atom fraction)"},
        "data": {"sources": ["mp_eform_gap: legacy MP formation energies (~2018), CC-BY-4.0",
                             "CHGNet 0.4.2 energies of the crystals relaxed from 3 % strained, 0.05 Å rattled copies"],
                 "crystals": fit["crystals"], "inliers": fit["inliers"]},
        "split": {"note": "training split only (is_validation false); held-out ids are never read by the fit"},
        "epochs": 0,
        "metrics": {key: fit[key] for key in ("ridge_penalty", "training_mae_uncorrected_eV_per_atom",
                                              "training_mae_corrected_eV_per_atom", "seconds", "cpu_seconds")},
        "card": f"{CORRECTIONS_NAME}.md",
        "created": time.strftime("%Y-%m-%d"),
    }
    if held_out:
        entry["metrics"]["held_out"] = held_out
    save_manifest_entry(CORRECTIONS_NAME, entry, folder)
    (folder / entry["card"]).write_text(_corrections_card(stored, entry))
    return entry


def _corrections_card(stored: dict, entry: dict) -> str:
    fit = stored["fit"]
    largest = sorted(stored["offsets_eV_per_atom"].items(), key=lambda item: -abs(item[1]))[:12]
    lines = [
        "# chgnet_corrections\n\n",
        "Offsets that turn CHGNet energies into formation energies on the scale of the reference hull "
        "(`reference_hull.md`): E_f = E_CHGNet − Σ xᵢ μᵢ + Σ_t x_t c_t (eV/atom), with μ the PBE elemental "
        "references (`element_references.json`), x_t the atom fraction of term t: one per element, and a "
        "separate one for a Hubbard-U metal (Co, Cr, Fe, Mn, Mo, Ni, V, W) in an oxide or fluoride.\n\n",
        "- Why: CHGNet's MPtrj labels carry the MP2020 corrections; the hull holds legacy (~2018) MP formation "
        "energies with the older corrections. The offsets map one onto the other.\n",
        f"- Data: {fit['crystals']} training-split crystals of `mp_eform_gap` (≤ {fit['max_sites']} sites, seed "
        f"{fit['seed']}), each relaxed with CHGNet from a {fit['strain']:.0%} strained, {fit['rattle_A']} Å rattled "
        "copy (the energies relaxed candidates get). Held-out (validation) ids are never read.\n",
        f"- Fit: ridge least squares, penalty {fit['ridge_penalty']} chosen by 5-fold cross-validation on the fit "
        f"crystals ({fit['cross_validated_mae_by_penalty']}); a second fit without the crystals more than "
        f"0.5 eV/atom off the first ({fit['inliers']} kept). Terms seen in no fit crystal get no offset.\n",
        f"- Training MAE of E_f: {fit['training_mae_uncorrected_eV_per_atom']} eV/atom uncorrected, "
        f"{fit['training_mae_corrected_eV_per_atom']} corrected. Took {fit['seconds']} s ({fit['cpu_seconds']} CPU s).\n",
        "- Largest offsets (eV/atom of the term): " + ", ".join(f"{t} {c:+.3f}" for t, c in largest) + ".\n",
        "- Rebuild: `crystal-designer build-index` (after the element references). Held-out accuracy: "
        "`crystal-designer evaluate hull` (routes `chgnet`, `mean`).\n",
    ]
    held_out = entry["metrics"].get("held_out")
    if held_out:
        lines.append(f"\n## Held-out accuracy\n\n`{held_out['command']}`: MAE (eV/atom) / F1 of stable (E_hull ≤ 0).\n\n"
                     "| route / input | crystals | MAE | F1 |\n|---|---|---|---|\n")
        for key, value in held_out["routes"].items():
            lines.append(f"| {key} | {value['count']} | {value['mae_eV_per_atom']} | {value['f1_stable']} |\n")
    return "".join(lines)
