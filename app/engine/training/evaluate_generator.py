"""Measured quality of the shipped generator on the validation cells it never trained on.

Reconstruction (z = μ, condition = predicted-Ef decile): StructureMatcher match rate
(stol 0.5, ltol 0.3, angle_tol 10), lattice-length MAE (Å), mean site-position error of matched
structures (Å), mean |Δ number of sites|, reported separately for perov_5 and MP cubic cells.
Sampling: structural validity (all distances > 0.5 Å) and compositional validity (charge
balance) of random samples from the prior, and the filter funnel around a few bases.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np

from app.engine.generation.generator import CrystalGenerator, GenerationSettings, charge_balanced, minimum_distance_ok

logger = logging.getLogger(__name__)


def _site_error(truth, decoded) -> float | None:
    """Mean distance (Å) between corresponding sites after the best alignment of two cells with
    the same number of sites (the decoded cell scaled to the true volume, as the matcher does)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    if len(truth) != len(decoded):
        return None
    # get_s2_like_s1 needs primitive_cell=False; conventional cells of equal size align directly.
    aligned = StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10, primitive_cell=False).get_s2_like_s1(truth, decoded)
    if aligned is None:
        return None
    distances = [truth.lattice.get_distance_and_image(a.frac_coords, b.frac_coords)[0]
                 for a, b in zip(truth, aligned)]
    return float(np.mean(distances))


def evaluate_reconstruction(generator: CrystalGenerator, structures, batch: int = 32) -> dict:
    """Reconstruction metrics over ``structures`` (conventional cubic cells)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10)
    matched, lattice_errors, site_errors, site_deltas, failures = 0, [], [], [], 0
    for start in range(0, len(structures), batch):
        chunk = structures[start:start + batch]
        latents, deciles = zip(*(generator.encode_structure(s) for s in chunk))
        for structure, latent, decile in zip(chunk, latents, deciles):
            decoded, _, error = generator.decode_latents(latent[None], decile)[0]
            if decoded is None:
                failures += 1
                site_deltas.append(len(structure))
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if matcher.fit(structure, decoded):
                    matched += 1
                    error_angstrom = _site_error(structure, decoded)
                    if error_angstrom is not None:
                        site_errors.append(error_angstrom)
            lattice_errors.append(np.abs(np.array(decoded.lattice.abc) - np.array(structure.lattice.abc)).mean())
            site_deltas.append(abs(len(decoded) - len(structure)))
    n = len(structures)
    return {
        "count": n,
        "match_rate": matched / max(n, 1),
        "lattice_mae_angstrom": float(np.mean(lattice_errors)) if lattice_errors else None,
        "mean_site_error_angstrom": float(np.mean(site_errors)) if site_errors else None,
        "mean_abs_delta_sites": float(np.mean(site_deltas)) if site_deltas else None,
        "no_crystal_decoded": failures,
    }


def evaluate_sampling(generator: CrystalGenerator, count: int = 1000, seed: int = 0) -> dict:
    """Validity of ``count`` random samples from the prior (condition deciles cycled 0-9)."""
    structural = compositional = decoded = 0
    per_decile = max(count // 10, 1)
    for decile in range(10):
        z = np.random.default_rng(seed + decile).standard_normal((per_decile, generator.vae.config.latent_dim))
        for structure, _, _ in generator.decode_latents(z, decile):
            if structure is None:
                continue
            decoded += 1
            structural += minimum_distance_ok(structure, 0.5)
            compositional += charge_balanced(structure.composition.reduced_formula)
    n = per_decile * 10
    return {"count": n, "decoded": decoded / n, "structural_validity": structural / n,
            "compositional_validity": compositional / n}


def evaluate_generator(n_reconstruct: int = 300, n_samples: int = 1000, n_bases: int = 3, n_around: int = 200) -> dict:
    """All generator metrics on the validation split (see module docstring)."""
    began = time.perf_counter()
    generator = CrystalGenerator.from_models(device="cpu")
    try:
        return _evaluate(generator, n_reconstruct, n_samples, n_bases, n_around, began)
    finally:
        generator.close()


def _evaluate(generator: CrystalGenerator, n_reconstruct: int, n_samples: int, n_bases: int, n_around: int,
              began: float) -> dict:
    from pymatgen.core import Structure

    from app.engine.training.generator_data import load_voxel_dataset
    from app.engine.training.train_generator import split

    dataset = load_voxel_dataset()
    _, val_rows = split(dataset)
    rng = np.random.default_rng(0)
    report: dict = {"reconstruction": {}}
    for label, is_perov in (("perov_5", True), ("mp_cubic", False)):
        rows = [r for r in val_rows if (dataset.sources[r] == "perov_5") == is_perov]
        rows = rng.permutation(rows)[:n_reconstruct]
        structures = [Structure.from_dict(dataset.structures[r]) for r in rows]
        report["reconstruction"][label] = evaluate_reconstruction(generator, structures)
        logger.info("%s: %s", label, report["reconstruction"][label])
    report["random_samples"] = evaluate_sampling(generator, n_samples)
    report["around_base"] = {}
    for r in rng.permutation(val_rows)[:n_bases]:
        base = Structure.from_dict(dataset.structures[r])
        result = generator.generate(GenerationSettings(mode="around", count=n_around, seed=1), base=base)
        valid = result.funnel["distance_ok"] / max(result.funnel["generated"], 1)
        report["around_base"][base.composition.reduced_formula] = {"funnel": result.funnel, "validity": valid}
    report["seconds"] = time.perf_counter() - began
    return report


def record_generator_metrics(report: dict, command: str, folder=None) -> None:
    """Store an evaluation report with the shipped VAE's manifest entry and rewrite its card.

    Parameters
    ----------
    report : dict
        Output of :func:`evaluate_generator`.
    command : str
        The command line that produced it (shown in the card).
    """
    from app.engine.core.paths import models_dir
    from app.engine.core.registry import load_manifest, save_manifest_entry
    from app.engine.training.train_generator import VAE_NAME, write_card

    folder = folder or models_dir()
    entry = load_manifest(folder)[VAE_NAME]
    entry["generator_metrics"] = {"command": command, "date": time.strftime("%Y-%m-%d"), "report": report}
    save_manifest_entry(VAE_NAME, entry, folder)
    write_card(VAE_NAME, entry, folder)


# -- stability of kept candidates vs a data-mined ion-substitution baseline ------------------------

#: Substitutions less likely than this (pymatgen's data-mined substitution probability) are not tried.
SUBSTITUTION_THRESHOLD = 1e-3


def substitution_baseline(base, count: int) -> list:
    """The ``count`` most probable charge-neutral ion substitutions of ``base`` (new crystals).

    pymatgen's :class:`SubstitutionPredictor` (Hautier et al. 2011, data-mined from the ICSD)
    proposes species replacements for the base's oxidation-state-decorated species; each is applied
    to the base's own cell, and the identity and non-neutral ones are skipped.
    """
    from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionPredictor
    from pymatgen.core import Species

    predictor = SubstitutionPredictor(threshold=SUBSTITUTION_THRESHOLD)
    known = set(predictor.p.species)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The first oxidation-state guess whose ions the substitution model knows (e.g. not As2+).
        guesses = base.composition.oxi_state_guesses(max_sites=-1)
        guess = next((g for g in guesses
                      if all(Species(el, g[el]) in known for el in g)), None)
        if guess is None:
            logger.warning("no ion-substitution baseline for %s: no oxidation states the model knows",
                           base.composition.reduced_formula)
            return []
        decorated = base.copy()
        decorated.add_oxidation_state_by_element(guess)
        species = sorted({site.specie for site in decorated}, key=str)
        predictions = predictor.list_prediction(species, to_this_composition=False)
    amounts = decorated.composition
    out, seen = [], set()
    for prediction in sorted(predictions, key=lambda p: -p["probability"]):
        mapping = prediction["substitutions"]
        if all(old == new for old, new in mapping.items()):
            continue
        charge = sum(amounts[old] * getattr(new, "oxi_state", 0) for old, new in mapping.items())
        new_elements = [new.symbol for new in mapping.values()]
        if abs(charge) > 1e-6 or len(set(new_elements)) < len(new_elements):
            continue
        substituted = base.copy()
        substituted.replace_species({old.symbol: new.symbol for old, new in mapping.items() if old.symbol != new.symbol})
        formula = substituted.composition.reduced_formula
        if formula in seen:
            continue
        seen.add(formula)
        out.append(substituted)
        if len(out) == count:
            break
    return out


def _stability_summary(candidates, threshold: float) -> dict:
    """Share of relaxed candidates within ``threshold`` eV/atom of the hull, and the E_hull spread."""
    values = [c.e_above_hull for c in candidates if c.e_above_hull is not None and c.relaxed_structure is not None]
    return {
        "count": len(candidates),
        "relaxed_with_e_hull": len(values),
        "within_threshold": float(np.mean([v <= threshold for v in values])) if values else None,
        "median_e_above_hull": float(np.median(values)) if values else None,
        "novel": sum(bool(c.novelty is not None and c.novelty.is_novel) for c in candidates),
        "sun": sum(bool(c.relaxed_structure is not None and c.e_above_hull is not None
                        and c.e_above_hull <= threshold and c.flags.get("structurally_novel")) for c in candidates),
    }


def evaluate_baseline(generator: CrystalGenerator, base, count: int, settings: GenerationSettings) -> dict:
    """Relax, place on the hull and test the novelty of ``count`` ion substitutions of ``base``,
    exactly as the generator's last stages treat its kept candidates."""
    from app.engine.generation.assessment import assess
    from app.engine.generation.generator import Candidate
    from app.engine.generation.settings import FUNNEL_STAGE_KEYS

    structures = substitution_baseline(base, count)
    predictions = generator.predictor.predict(structures) if structures else []
    candidates = [Candidate(n, s, s.composition.reduced_formula,
                            dict(p.values) if not isinstance(p, Exception) else {},
                            {"decoded": True, "bonds_ok": True, "unique": True}, 0.0, kept=True)
                  for n, (s, p) in enumerate(zip(structures, predictions))]
    funnel = {key: 0 for key in FUNNEL_STAGE_KEYS}
    assess(candidates, funnel, settings, base=base, predictor=generator.predictor,
           structure_index=generator.structure_index, hull=generator.hull, relax=generator.relax,
           device=str(generator.device))
    return _stability_summary(candidates, settings.max_e_above_hull)


def evaluate_stability(bases, n_around: int = 200, seed: int = 1, settings_options: dict | None = None,
                       generator: CrystalGenerator | None = None) -> dict:
    """Stability and S.U.N. of the generator's kept candidates around each base, next to the
    ion-substitution baseline with as many candidates (at least 10).

    Parameters
    ----------
    bases : sequence of (label, Structure)
    n_around : int
        Latent samples per base.
    settings_options : dict, optional
        Extra :class:`GenerationSettings` fields (e.g. ``sigma``, ``decile``).

    Returns
    -------
    dict
        ``per_base`` {label: {"generator": summary, "baseline": summary, "funnel": counts,
        "sun_per_sample": rate}} and ``overall`` with the pooled shares.
    """
    own = generator is None
    generator = generator or CrystalGenerator(device="auto")
    began = time.perf_counter()
    try:
        report: dict = {"per_base": {}, "n_around": n_around, "seed": seed, "settings": settings_options or {}}
        pooled = {"generator": [], "baseline": []}
        for label, base in bases:
            settings = GenerationSettings(mode="around", count=n_around, seed=seed, **(settings_options or {}))
            result = generator.generate(settings, base=base)
            # Kept before the near-hull and novelty filters: what the generator offers a designer.
            offered = [c for c in result.candidates if c.relaxation is not None]
            baseline_summary = evaluate_baseline(generator, base, max(len(offered), 10), settings)
            entry = {"formula": base.composition.reduced_formula, "funnel": result.funnel, "sun": result.sun,
                     "sun_per_sample": result.sun / n_around,
                     "generator": _stability_summary(offered, settings.max_e_above_hull),
                     "baseline": baseline_summary}
            report["per_base"][label] = entry
            pooled["generator"].append(entry["generator"])
            pooled["baseline"].append(baseline_summary)
            logger.info("%s: %s", label, entry)
        report["overall"] = {name: _pool(summaries) for name, summaries in pooled.items()}
        report["overall"]["sun_per_sample"] = (sum(e["sun"] for e in report["per_base"].values())
                                               / max(n_around * len(report["per_base"]), 1))
        report["seconds"] = time.perf_counter() - began
        return report
    finally:
        if own:
            generator.close()


def _pool(summaries: list[dict]) -> dict:
    relaxed = sum(s["relaxed_with_e_hull"] for s in summaries)
    within = sum((s["within_threshold"] or 0) * s["relaxed_with_e_hull"] for s in summaries)
    return {"count": sum(s["count"] for s in summaries), "relaxed_with_e_hull": relaxed,
            "within_threshold": within / relaxed if relaxed else None,
            "novel": sum(s["novel"] for s in summaries), "sun": sum(s["sun"] for s in summaries)}


def held_out_perovskite_bases(count: int = 3, seed: int = 0) -> list:
    """``count`` ABX3 perovskites of the generator's validation split, as (label, Structure)."""
    from pymatgen.core import Structure

    from app.engine.training.generator_data import load_voxel_dataset
    from app.engine.training.train_generator import split

    dataset = load_voxel_dataset()
    _, val_rows = split(dataset)
    rows = [r for r in np.random.default_rng(seed).permutation(val_rows) if dataset.sources[r] == "perov_5"]
    out = []
    for r in rows[:count]:
        structure = Structure.from_dict(dataset.structures[r])
        out.append((f"{structure.composition.reduced_formula} (validation row {int(r)})", structure))
    return out
