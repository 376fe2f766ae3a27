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
    generator = CrystalGenerator(device="cpu")
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
