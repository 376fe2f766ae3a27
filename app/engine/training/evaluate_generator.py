"""Measured quality of the shipped generator on the validation cells it never trained on.

Reconstruction (z = μ, condition = predicted-Ef decile): StructureMatcher match rate
(stol 0.5, ltol 0.3, angle_tol 10), lattice-length MAE (Å), mean site-position error of matched
structures (Å), mean |Δ number of sites|, reported separately for perov_5 and MP cubic cells.
Sampling: structural validity (all distances > 0.5 Å) and compositional validity (charge
balance; SMACT as CDVAE) of random samples from the prior (the shipped aggregate-posterior
prior, else N(0, I)), their coverage of the perov_5 cells by the CDVAE protocol
(``coverage``), and the filter funnel around a few bases. The all-crystal-system
``periodic_vae``, where it ships, is measured the same way per set and around one
tetragonal, hexagonal and orthorhombic base.
"""

from __future__ import annotations

import logging
import os
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


def _deciles_cycled(count: int, n_conditions: int = 10) -> list[tuple[int, int]]:
    """``(decile, samples)`` pairs spreading ``count`` samples over the deciles (as equal as possible)."""
    base, extra = divmod(count, n_conditions)
    return [(d, base + (d < extra)) for d in range(n_conditions) if base + (d < extra)]


def evaluate_sampling(generator: CrystalGenerator, count: int = 1000, seed: int = 0, prior=None,
                      keep_structures: bool = False) -> dict:
    """Validity of ``count`` random samples (condition deciles cycled 0-9).

    Parameters
    ----------
    prior : LatentPrior or "standard_normal", optional
        Where the latents come from: the given prior, N(0, I) (``"standard_normal"``), or by
        default what the generator's random mode uses (its shipped prior, else N(0, I)).
    keep_structures : bool
        Also return the decoded crystals (None where none was decoded) under ``"structures"``.

    Returns
    -------
    dict
        ``count``, ``decoded``, ``structural_validity`` (all periodic distances > 0.5 Å),
        ``compositional_validity`` (charge balanced, of all samples), ``balanced_among_valid``,
        ``smact_validity`` (CDVAE's SMACT test, of all samples), ``sampler``, ``seconds``.
    """
    from app.engine.training.coverage import smact_valid

    began = time.perf_counter()
    if prior is None:
        prior = generator.prior if generator.prior is not None else "standard_normal"
    structures: list = []
    latent = generator.vae.config.latent_dim
    for decile, n in _deciles_cycled(count, generator.vae.config.n_conditions):
        rng = np.random.default_rng(seed + decile)
        z = rng.standard_normal((n, latent)) if isinstance(prior, str) else prior.sample(n, rng, condition=decile)
        structures += [structure for structure, _, _ in generator.decode_latents(z, decile)]
    decoded = [s for s in structures if s is not None]
    valid = [s for s in decoded if minimum_distance_ok(s, 0.5)]
    balanced = sum(charge_balanced(s.composition.reduced_formula) for s in decoded)
    balanced_valid = sum(charge_balanced(s.composition.reduced_formula) for s in valid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smact = sum(smact_valid(s.composition) for s in decoded)
    n = max(len(structures), 1)
    report = {"count": len(structures), "sampler": "N(0, I)" if isinstance(prior, str) else "aggregate-posterior prior",
              "decoded": len(decoded) / n, "structural_validity": len(valid) / n,
              "compositional_validity": balanced / n, "balanced_among_valid": balanced_valid / max(len(valid), 1),
              "smact_validity": smact / n, "seconds": round(time.perf_counter() - began, 1)}
    if keep_structures:
        report["structures"] = structures
    return report


def load_average() -> float:
    """One-minute load average of this machine (figures measured under load say so)."""
    return round(os.getloadavg()[0], 2)


def compare_samplers(prior, count: int = 1000, generator: CrystalGenerator | None = None, seed: int = 0,
                     with_coverage: bool = False) -> dict:
    """Random-sample validity from ``prior`` and from N(0, I), ``count`` samples each (same seeds);
    with ``with_coverage`` also the prior samples' COV-R / COV-P on perov_5 (:func:`evaluate_coverage`)."""
    own = generator is None
    generator = generator or CrystalGenerator.from_models(device="cpu")
    try:
        report = {"prior": evaluate_sampling(generator, count, seed, prior=prior, keep_structures=with_coverage)}
        report["prior"]["load_average"] = load_average()
        logger.info("prior samples: %s", {k: v for k, v in report["prior"].items() if k != "structures"})
        if with_coverage:
            report["prior_coverage"] = evaluate_coverage(report["prior"].pop("structures"))
            logger.info("prior coverage: %s", report["prior_coverage"])
        report["standard_normal"] = evaluate_sampling(generator, count, seed, prior="standard_normal")
        report["standard_normal"]["load_average"] = load_average()
        return report
    finally:
        if own:
            generator.close()


def evaluate_coverage(structures, reference_path=None, cutoffs=None) -> dict:
    """COV-R / COV-P of generated crystals against the perov_5 reference cells (CDVAE protocol).

    The reference is the shared perov_5 ``val`` file (the official CDVAE test split is held
    back): all of its cells, and separately the cells of the generator's own validation split
    (the other ~90 % were training cells of the VAE).
    """
    from app.engine.training.coverage import (CDVAE_CUTOFFS, PUBLISHED_PEROV5_COVERAGE, coverage,
                                              fingerprint_structures, perov5_reference_path,
                                              reference_fingerprints, training_composition_scaler)
    from app.engine.training.datasets import is_validation

    struct_cutoff, comp_cutoff = cutoffs or CDVAE_CUTOFFS["perov_5"]
    began = time.perf_counter()
    ids, reference = reference_fingerprints(reference_path)
    reference_seconds = time.perf_counter() - began
    scaler = training_composition_scaler()
    began = time.perf_counter()
    generated = fingerprint_structures(list(structures))
    fingerprint_seconds = time.perf_counter() - began
    held_out = np.array([is_validation(str(i)) for i in ids])
    path = reference_path or perov5_reference_path()
    report = {
        "reference": f"{path.name} of perov_5 (shared data; CDVAE's test split is held back)",
        "cutoffs": {"structure": struct_cutoff, "composition": comp_cutoff},
        "composition_scaler": "Magpie features standardised over 4,000 training formulas of the structure index",
        "all_reference_cells": coverage(generated, reference, scaler, struct_cutoff, comp_cutoff),
        "held_out_reference_cells": coverage(generated, reference.subset(held_out), scaler, struct_cutoff,
                                             comp_cutoff),
        "samples": len(generated),
        "fingerprint_seconds": round(fingerprint_seconds, 1),
        "reference_seconds": round(reference_seconds, 1),
        "load_average": load_average(),
        "published_perov_5_cov_r_cov_p_percent": PUBLISHED_PEROV5_COVERAGE,
    }
    return report


def evaluate_generator(n_reconstruct: int = 300, n_samples: int = 1000, n_bases: int = 3, n_around: int = 200,
                       coverage_samples: int | None = None) -> dict:
    """All generator metrics on the validation split (see module docstring)."""
    began = time.perf_counter()
    generator = CrystalGenerator.from_models(device="cpu")
    try:
        report = _evaluate(generator, n_reconstruct, n_samples, n_bases, n_around, began, coverage_samples)
    finally:
        generator.close()
    report["periodic"] = evaluate_periodic(n_reconstruct, n_samples, n_around,
                                           coverage_samples=n_samples if coverage_samples is None else coverage_samples)
    report["seconds"] = time.perf_counter() - began
    return report


def _evaluate(generator: CrystalGenerator, n_reconstruct: int, n_samples: int, n_bases: int, n_around: int,
              began: float, coverage_samples: int | None = None) -> dict:
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
    sampling = evaluate_sampling(generator, n_samples, keep_structures=True)
    samples = sampling.pop("structures")
    report["random_samples"] = sampling
    report["random_samples"]["load_average"] = load_average()
    logger.info("random samples: %s", sampling)
    coverage_samples = n_samples if coverage_samples is None else coverage_samples
    report["coverage"] = evaluate_coverage(samples[:coverage_samples]) if coverage_samples else "not measured"
    report["around_base"] = {}
    for r in rng.permutation(val_rows)[:n_bases]:
        base = Structure.from_dict(dataset.structures[r])
        result = generator.generate(GenerationSettings(mode="around", count=n_around, seed=1), base=base)
        valid = result.funnel["distance_ok"] / max(result.funnel["generated"], 1)
        report["around_base"][base.composition.reduced_formula] = {"funnel": result.funnel, "validity": valid}
    report["seconds"] = time.perf_counter() - began
    return report


# -- the all-crystal-system (periodic) model -------------------------------------------------------

PERIODIC_NAME = "periodic_vae"
#: Crystal systems of the non-cubic bases around which the periodic model generates.
NON_CUBIC_BASE_SYSTEMS = ("tetragonal", "hexagonal", "orthorhombic")


def evaluate_periodic(n_reconstruct: int = 300, n_samples: int = 1000, n_around: int = 200, sigma: float = 0.5,
                      folder=None, coverage_samples: int = 0) -> dict:
    """Reconstruction per set, random-sample validity (its prior, where one ships), validity
    around one validation base of each non-cubic system and (``coverage_samples`` > 0) the
    perov_5 coverage of its perov_5 prior (:func:`evaluate_periodic_perov5_coverage`), for the
    shipped ``periodic_vae``; ``{"available": False, "reason": …}`` when this installation has none.

    Samples are decoded as generation decodes them (:func:`periodic_model.decode_structures`), so a
    decoded cell with an edge outside :data:`periodic_model.PLAUSIBLE_PERIODIC_LENGTH` counts as
    not decoded, as the product rejects it."""
    from app.engine.core.errors import ModelError
    from app.engine.core.registry import load_manifest

    if PERIODIC_NAME not in load_manifest(folder):
        return {"available": False, "reason": f"no '{PERIODIC_NAME}' model in the manifest"}
    try:
        import app.engine.generation.periodic_model as periodic
        from app.engine.core.registry import load_model
        from app.engine.generation.prior import load_prior
        from app.engine.training import train_periodic_generator as training

        model, entry = load_model(PERIODIC_NAME, folder)
        prior = load_prior(PERIODIC_NAME, folder, model.config.latent_dim)
    except (ImportError, ModelError) as error:
        return {"available": False, "reason": str(error)}
    dataset = training.load_periodic_dataset()
    _, val_rows = training.split(dataset)
    deciles = np.searchsorted(np.asarray(entry["architecture"]["decile_edges_eV_per_atom"]), dataset.formation)
    report: dict = {"available": True, "reconstruction": {}}
    for name, rows in training.evaluation_sets(dataset, val_rows).items():
        rows = rows[np.random.default_rng(0).permutation(len(rows))[:n_reconstruct]]
        report["reconstruction"][name] = training.evaluate_reconstruction(model, dataset, rows, deciles)
    began = time.perf_counter()
    structures = []
    for decile, n in _deciles_cycled(n_samples, model.config.n_conditions):
        rng = np.random.default_rng(decile)
        z = (prior.sample(n, rng, condition=decile) if prior is not None
             else periodic.sample_prior(model, n, [decile] * n, rng))
        structures += [s for s, _, _ in periodic.decode_structures(model, z, decile)]
    report["random_samples"] = _validity_of(structures, time.perf_counter() - began)
    report["random_samples"]["sampler"] = "aggregate-posterior prior" if prior is not None else "N(0, I)"
    report["around_base"] = {}
    for system in NON_CUBIC_BASE_SYSTEMS:
        rows = val_rows[(dataset.systems[val_rows] == system) & (dataset.sources[val_rows] == "mp_eform_gap")]
        if len(rows) == 0:
            report["around_base"][system] = "no validation base of this system"
            continue
        row = int(rows[np.random.default_rng(0).integers(len(rows))])
        density = np.asarray(dataset.density[[row]], dtype=np.float32)
        mu, _ = periodic.encode_maps(model, density, np.asarray(dataset.species[[row]]), deciles[[row]])
        z = mu[0][None] + sigma * np.random.default_rng(1).standard_normal((n_around, mu.shape[1]))
        began = time.perf_counter()
        decoded = [s for s, _, _ in periodic.decode_structures(model, z, int(deciles[row]))]
        base_formula = training._true_structure(dataset, row).composition.reduced_formula
        report["around_base"][system] = {"base": f"{base_formula} ({dataset.ids[row]})", "sigma": sigma,
                                         **_validity_of(decoded, time.perf_counter() - began)}
    report["perov_5_coverage"] = (evaluate_periodic_perov5_coverage(coverage_samples, folder=folder)
                                  if coverage_samples else "not measured")
    return report


def _validity_of(structures, seconds: float) -> dict:
    decoded = [s for s in structures if s is not None]
    valid = [s for s in decoded if minimum_distance_ok(s, 0.5)]
    n = max(len(structures), 1)
    return {"count": len(structures), "decoded": len(decoded) / n, "structural_validity": len(valid) / n,
            "compositional_validity": sum(charge_balanced(s.composition.reduced_formula) for s in decoded) / n,
            "balanced_among_valid": (sum(charge_balanced(s.composition.reduced_formula) for s in valid)
                                     / max(len(valid), 1)),
            "seconds": round(seconds, 1), "load_average": load_average()}


#: Published perov_5 figures the report is printed beside.
PUBLISHED = {"ICSG3D": {"cov_r": 73.9, "cov_p": 10.1, "structural_validity": 73.6, "compositional_validity": 82.95},
             "DiffCSP": {"cov_r": 99.7, "cov_p": 98.3, "structural_validity": 100.0, "compositional_validity": 98.85}}


#: Cells of a condition decile needed to fit that decile's perov_5 mixture (fewer: decile left out).
MIN_PEROV5_CELLS_PER_DECILE = 20


def populated_classes(conditions: np.ndarray, n_conditions: int, min_cells: int = MIN_PEROV5_CELLS_PER_DECILE):
    """Condition classes with at least ``min_cells`` cells, renumbered 0 … k-1.

    Returns
    -------
    used : numpy.ndarray
        ``(k,)`` original class of each new class.
    keep : numpy.ndarray
        ``(n,)`` bool, cells of a used class.
    compact : numpy.ndarray
        ``(keep.sum(),)`` new class of each kept cell.
    """
    conditions = np.asarray(conditions, dtype=np.int64)
    used = np.flatnonzero(np.bincount(conditions, minlength=n_conditions) >= min_cells)
    keep = np.isin(conditions, used)
    return used, keep, np.searchsorted(used, conditions[keep])


def periodic_perov5_prior(model, dataset, temperature: float = 0.5, n_components: int = 16,
                          screen_samples: int = 3, folder=None):
    """The periodic model's prior restricted to perov_5: mixtures fitted to its perov_5 training
    posteriors only.

    CDVAE measures coverage with a model trained on perov_5 alone; ``periodic_vae`` is trained
    on MP, perov_5 and carbon_24 together, so its perov_5 distribution is the part of its
    aggregate posterior that the perov_5 training cells occupy. Fitted like the shipped prior
    (per formation-energy decile, diagonal mixtures of the posterior means, ``temperature`` on
    the deviations, components reweighted by decoded validity); deciles with fewer than
    :data:`MIN_PEROV5_CELLS_PER_DECILE` perov_5 cells get no samples.

    Returns
    -------
    (LatentPrior, numpy.ndarray)
        The mixture over the used deciles, and the decile (condition of the VAE) of each of its
        condition classes.
    """
    from app.engine.generation.periodic_model import decode_structures
    from app.engine.training.fit_prior import cached_posteriors, fit_latent_prior, screen_components
    from app.engine.training.train_periodic_generator import split

    posteriors = cached_posteriors(PERIODIC_NAME, folder)
    train_rows = np.sort(split(dataset)[0])  # the posterior source's row order
    perov = dataset.sources[train_rows] == "perov_5"
    used, keep, compact = populated_classes(posteriors.conditions[perov], posteriors.n_conditions)
    prior = fit_latent_prior(posteriors.means[perov][keep], None, compact, len(used), n_components, 0, temperature)
    if screen_samples:
        def is_valid(z, condition):
            decoded = [s for s, _, _ in decode_structures(model, z, int(used[condition]))]
            return np.array([s is not None and minimum_distance_ok(s, 0.5) for s in decoded])

        prior, _ = screen_components(prior, is_valid, screen_samples, 1)
    return prior, used


def evaluate_periodic_perov5_coverage(n_samples: int = 1000, seed: int = 0, folder=None) -> dict:
    """COV-R / COV-P on perov_5 (CDVAE protocol, :func:`evaluate_coverage`) of ``n_samples``
    random crystals of ``periodic_vae`` drawn from its perov_5 prior (:func:`periodic_perov5_prior`;
    deciles in their training shares), with their structural and compositional validity.

    Decoded by :func:`periodic_model.decode_structures`, as in generation: cells with an edge
    outside :data:`periodic_model.PLAUSIBLE_PERIODIC_LENGTH` count as not decoded."""
    import app.engine.generation.periodic_model as periodic
    from app.engine.core.registry import load_model
    from app.engine.training.train_periodic_generator import load_periodic_dataset

    model, entry = load_model(PERIODIC_NAME, folder)
    dataset = load_periodic_dataset()
    began = time.perf_counter()
    prior, deciles = periodic_perov5_prior(model, dataset, folder=folder)
    rng = np.random.default_rng(seed)
    classes = rng.choice(prior.n_conditions, size=n_samples, p=prior.condition_weights)
    structures = []
    for c in range(prior.n_conditions):
        n = int((classes == c).sum())
        if n:
            z = prior.sample(n, rng, condition=c)
            structures += [s for s, _, _ in periodic.decode_structures(model, z, int(deciles[c]))]
    validity = _validity_of(structures, time.perf_counter() - began)
    report = {"model": PERIODIC_NAME, "model_sha256": entry["sha256"],
              "sampler": "mixture fitted to the perov_5 training posteriors (temperature 0.5, components screened)",
              "deciles": [int(d) for d in deciles], "random_samples": validity,
              "five_site_rate": float(np.mean([s is not None and len(s) == 5 for s in structures])),
              # As CDVAE: every sample is fingerprinted; undecoded ones count in COV-P's denominator.
              "coverage": evaluate_coverage(structures)}
    return report


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def format_generator_report(report: dict) -> str:
    """The evaluation report as a short text table (per set, sampling, coverage, around bases)."""
    lines = ["Reconstruction (validation cells; StructureMatcher stol 0.5, ltol 0.3, angle 10°)",
             f"  {'set':<24}{'model':<14}{'cells':>6}{'match':>10}{'lattice MAE Å':>15}{'valid':>10}"]
    for name, r in report.get("reconstruction", {}).items():
        lines.append(f"  {name:<24}{'density_vae':<14}{r['count']:>6}{_percent(r['match_rate']):>10}"
                     f"{r['lattice_mae_angstrom'] or float('nan'):>15.3f}{'':>10}")
    periodic = report.get("periodic", {})
    if periodic.get("available"):
        for name, r in periodic["reconstruction"].items():
            lines.append(f"  {name:<24}{'periodic_vae':<14}{r['cells']:>6}{_percent(r['match_rate']):>10}"
                         f"{r['lattice_length_mae_angstrom']:>15.3f}{_percent(r['validity_rate']):>10}")
    else:
        lines.append(f"  MP non-cubic: not available ({periodic.get('reason', 'not evaluated')})")
    lines += ["", "Random samples (structurally valid = all periodic distances > 0.5 Å)"]
    samples = [("density_vae", report.get("random_samples"))]
    if periodic.get("available"):
        samples.append(("periodic_vae", periodic.get("random_samples")))
    for name, r in samples:
        if r:
            lines.append(f"  {name}: {r['count']} samples from {r.get('sampler', '?')}: structurally valid "
                         f"{_percent(r['structural_validity'])}, charge balanced {_percent(r['compositional_validity'])}"
                         f" (among valid {_percent(r.get('balanced_among_valid'))})")
    lines.append(f"  published perov_5: ICSG3D {PUBLISHED['ICSG3D']['structural_validity']} / "
                 f"{PUBLISHED['ICSG3D']['compositional_validity']} %, DiffCSP {PUBLISHED['DiffCSP']['structural_validity']}"
                 f" / {PUBLISHED['DiffCSP']['compositional_validity']} %")
    lines += ["", "Coverage of perov_5 (CDVAE protocol)"]
    periodic_coverage = periodic.get("perov_5_coverage") if periodic.get("available") else None
    for name, coverage in (("density_vae", report.get("coverage")),
                           ("periodic_vae", periodic_coverage["coverage"] if isinstance(periodic_coverage, dict)
                            else periodic_coverage)):
        if isinstance(coverage, dict):
            cut = coverage["cutoffs"]
            for label in ("all_reference_cells", "held_out_reference_cells"):
                c = coverage[label]
                lines.append(f"  {name}: {coverage['samples']} samples vs {c['reference_count']} "
                             f"{label.replace('_', ' ')} (cutoffs {cut['structure']} / {cut['composition']}): "
                             f"COV-R {_percent(c['cov_recall'])}, COV-P {_percent(c['cov_precision'])}")
        else:
            lines.append(f"  {name}: {coverage or 'not measured'}")
    if isinstance(periodic_coverage, dict):
        lines.append(f"  periodic_vae samples from {periodic_coverage['sampler']}")
    lines.append(f"  published: ICSG3D {PUBLISHED['ICSG3D']['cov_r']} / {PUBLISHED['ICSG3D']['cov_p']} %, "
                 f"DiffCSP {PUBLISHED['DiffCSP']['cov_r']} / {PUBLISHED['DiffCSP']['cov_p']} % (10,000 samples)")
    lines += ["", "Validity around bases"]
    for formula, r in report.get("around_base", {}).items():
        lines.append(f"  density_vae around {formula}: {_percent(r['validity'])}")
    if periodic.get("available"):
        for system, r in periodic["around_base"].items():
            lines.append(f"  periodic_vae around {'an' if system[0] in 'aeiou' else 'a'} {system} base: "
                         + (r if isinstance(r, str) else f"{r['base']}: {_percent(r['structural_validity'])}"))
    else:
        lines.append("  around non-cubic bases (tetragonal, hexagonal, orthorhombic): not available")
    return "\n".join(lines) + "\n"


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


#: Thresholds tried in turn: SubstitutionPredictor's probability is a product over the species, so
#: a rare ion (Zr3+) leaves no change above 1e-3 at all.
SUBSTITUTION_THRESHOLDS = (SUBSTITUTION_THRESHOLD, 1e-4, 1e-5)
#: Oxidation-state assignments tried per threshold (the most plausible first).
SUBSTITUTION_GUESSES = 3


def substitution_baseline(base, count: int) -> list:
    """The ``count`` most probable charge-neutral ion substitutions of ``base`` (new crystals).

    pymatgen's :class:`SubstitutionPredictor` (Hautier et al. 2011, data-mined from the ICSD)
    proposes species replacements for the base's oxidation-state-decorated species; each is applied
    to the base's own cell, and the identity and non-neutral ones are skipped. Oxidation-state
    guesses are tried in pymatgen's order (common states, then all), those with most ions the
    model knows first; ions it does not know (e.g. As2+) stay as they are. When a threshold gives
    too few substitutions the next, lower one of :data:`SUBSTITUTION_THRESHOLDS` is tried.
    """
    from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionPredictor
    from pymatgen.core import Species

    out, seen = [], {base.composition.reduced_formula}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guesses = list(base.composition.oxi_state_guesses(max_sites=-1))
        guesses += [g for g in base.composition.oxi_state_guesses(max_sites=-1, all_oxi_states=True)
                    if g not in guesses]
        for threshold in SUBSTITUTION_THRESHOLDS:
            predictor = SubstitutionPredictor(threshold=threshold)
            known = set(predictor.p.species)
            ranked = sorted(guesses, key=lambda g: -sum(Species(el, g[el]) in known for el in g))
            ranked = [g for g in ranked if any(Species(el, g[el]) in known for el in g)][:SUBSTITUTION_GUESSES]
            for guess in ranked:
                decorated = base.copy()
                decorated.add_oxidation_state_by_element(guess)
                species = sorted({site.specie for site in decorated if site.specie in known}, key=str)
                amounts = decorated.composition
                for prediction in sorted(predictor.list_prediction(species, to_this_composition=False),
                                         key=lambda p: -p["probability"]):
                    mapping = {old: new for old, new in prediction["substitutions"].items() if old != new}
                    if not mapping:
                        continue
                    charge = sum(amounts[old] * (getattr(new, "oxi_state", 0) - old.oxi_state)
                                 for old, new in mapping.items())
                    elements = [site.symbol for site in amounts.elements if site not in mapping]
                    elements += [new.symbol for new in mapping.values()]
                    if abs(charge) > 1e-6 or len(set(elements)) < len(elements):
                        continue
                    substituted = base.copy()
                    substituted.replace_species({old.symbol: new.symbol for old, new in mapping.items()})
                    formula = substituted.composition.reduced_formula
                    if formula in seen:
                        continue
                    seen.add(formula)
                    out.append(substituted)
                    if len(out) == count:
                        return out
    if not out:
        logger.warning("no ion-substitution baseline for %s: no charge-neutral substitution of ions the model knows",
                       base.composition.reduced_formula)
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
