"""Yield of stable, unique, novel (S.U.N.) candidates per N samples around held-out ABX3
perovskites, for the generation levers that exist, next to the ion-substitution baseline.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/candidate_yield.py [--n 200] [--bases 3] [--base-index I]
        [--levers default,sigma_1.0,...|none] [--no-relax] [--baseline [--baseline-count K]]
        [--hull-energy mean|chgnet|predicted]

Levers (``--levers``, comma-separated; each spends N samples in all):

- ``default``: the product's default settings (``GenerationSettings()``);
- ``sigma_0.5`` (the default before σ 1.5), ``sigma_1.0``, ``sigma_1.5``, ``sigma_2.0``: a wider latent neighbourhood;
- ``decile_0``: conditioned on the lowest formation-energy decile; ``sigma_1.5_decile_0``,
  ``sigma_2.0_decile_0`` both;
- ``sigma_pooled``: N/3 samples at each of σ 0.5, 1.0, 1.5, pooled;
- ``decile_pooled``: N/3 samples at each of the base decile, decile 0 and decile 2, pooled;
- ``substitution``: N/4 samples around the base and around each of its 3 most probable
  charge-neutral ion substitutions (pymatgen's SubstitutionPredictor), pooled.

Pooled runs count a crystal once: S.U.N. candidates of the parts are deduplicated with the
novelty matcher. Deduplication before relaxation is always on (the funnel's ``unique`` stage comes
first); each line says how many relaxations it saved (``in_windows`` − ``unique``).

Prints one JSON line per (base, lever): the funnel (summed over parts), S.U.N., the share of
relaxed kept candidates within 0.1 eV/atom of the hull, wall and CPU seconds and the load
average; with ``--baseline`` also one line per base for the ion-substitution baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

#: ``{lever: [(share of the samples, GenerationSettings options, base: 0 = the base, k = k-th substitution)]}``.
LEVERS = {
    "default": [(1.0, {}, 0)],
    "sigma_0.5": [(1.0, {"sigma": 0.5}, 0)],
    "sigma_1.0": [(1.0, {"sigma": 1.0}, 0)],
    "sigma_1.5": [(1.0, {"sigma": 1.5}, 0)],
    "sigma_2.0": [(1.0, {"sigma": 2.0}, 0)],
    "decile_0": [(1.0, {"decile": 0}, 0)],
    "sigma_1.5_decile_0": [(1.0, {"sigma": 1.5, "decile": 0}, 0)],
    "sigma_2.0_decile_0": [(1.0, {"sigma": 2.0, "decile": 0}, 0)],
    "sigma_pooled": [(1 / 3, {"sigma": 0.5}, 0), (1 / 3, {"sigma": 1.0}, 0), (1 / 3, {"sigma": 1.5}, 0)],
    "decile_pooled": [(1 / 3, {}, 0), (1 / 3, {"decile": 0}, 0), (1 / 3, {"decile": 2}, 0)],
    "substitution": [(0.25, {}, 0), (0.25, {}, 1), (0.25, {}, 2), (0.25, {}, 3)],
}
THRESHOLD = 0.1  # eV/atom


def run_lever(generator, base, substitutes: list, parts: list, n: int, relax: bool, seed: int = 1,
              hull_energy: str | None = None) -> dict:
    """Generate the parts of one lever, pool them and count S.U.N. once per distinct crystal."""
    from app.engine.generation.assessment import final_structure
    from app.engine.generation.novelty import same_crystal, structure_matcher
    from app.engine.generation.settings import GenerationSettings

    began, cpu_began = time.perf_counter(), time.process_time()
    funnel: dict[str, int] = {}
    sun_structures: dict[str, list] = {}
    matcher = structure_matcher()
    offered, within, bases_used = 0, 0, []
    for part, (share, options, which) in enumerate(parts):
        part_base = base if which == 0 else (substitutes[which - 1] if which <= len(substitutes) else None)
        if part_base is None:
            continue
        bases_used.append(part_base.composition.reduced_formula)
        extra = {"hull_energy": hull_energy} if hull_energy else {}
        settings = GenerationSettings(mode="around", count=max(1, round(share * n)), seed=seed + part, relax=relax,
                                      require_near_hull=relax, **options, **extra)
        result = generator.generate(settings, base=part_base)
        for key, value in result.funnel.items():
            funnel[key] = funnel.get(key, 0) + value
        for candidate in result.candidates:
            if candidate.relaxed_structure is not None and candidate.e_above_hull is not None:
                offered += 1
                within += int(candidate.e_above_hull <= THRESHOLD)
            if not (candidate.kept and candidate.flags.get("structurally_novel")):
                continue
            if relax and not candidate.flags.get("near_hull"):
                continue
            structure = final_structure(candidate)
            # Against the original base too: a substituted base's copy of the base is not novel.
            if which != 0 and same_crystal(structure, base, matcher):
                continue
            formula = structure.composition.reduced_formula
            if not any(same_crystal(structure, other, matcher) for other in sun_structures.get(formula, ())):
                sun_structures.setdefault(formula, []).append(structure)
    return {"funnel": funnel, "sun": sum(map(len, sun_structures.values())),
            "sun_formulas": sorted(sun_structures),
            "relaxations_saved_by_dedupe": funnel.get("in_windows", 0) - funnel.get("unique", 0),
            "relaxed_kept_with_e_hull": offered,
            "within_0.1_eV": round(within / offered, 3) if offered else None, "bases": bases_used,
            "seconds": round(time.perf_counter() - began, 1), "cpu_seconds": round(time.process_time() - cpu_began, 1),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def main() -> None:
    from app.engine.core.threads import configure_threads
    from app.engine.generation.generator import CrystalGenerator
    from app.engine.generation.settings import GenerationSettings
    from app.engine.stability.formation import DEFAULT_HULL_ENERGY
    from app.engine.training.evaluate_generator import (
        evaluate_baseline,
        held_out_perovskite_bases,
        substitution_baseline,
    )

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--bases", type=int, default=3)
    parser.add_argument("--base-index", type=int, default=None, help="only this one of the held-out bases")
    parser.add_argument("--levers", default="default,sigma_1.0,decile_0,sigma_pooled,substitution")
    parser.add_argument("--no-relax", dest="relax", action="store_false")
    parser.add_argument("--baseline", action="store_true", help="also the ion-substitution baseline per base")
    parser.add_argument("--baseline-count", type=int, default=None,
                        help="substitutions in the baseline (default: as many as the first lever relaxed, ≥ 10)")
    parser.add_argument("--hull-energy", default=None, help="formation energy of relaxed candidates on the hull "
                        "(mean, chgnet, predicted; default the product's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    configure_threads()
    levers = [name for name in args.levers.split(",") if name and name != "none"]
    unknown = [name for name in levers if name not in LEVERS]
    if unknown:
        parser.error(f"unknown levers {unknown}; choose from {', '.join(LEVERS)}")
    bases = held_out_perovskite_bases(args.bases)
    if args.base_index is not None:
        bases = [bases[args.base_index]]
    generator = CrystalGenerator(device="cpu", segmentation_workers=1)
    try:
        for label, base in bases:
            substitutes = substitution_baseline(base, 3)
            offered = []
            for name in levers:
                line = run_lever(generator, base, substitutes, LEVERS[name], args.n, args.relax,
                                 hull_energy=args.hull_energy)
                offered.append(line["relaxed_kept_with_e_hull"])
                print(json.dumps({"base": label, "lever": name, "samples": args.n,
                                  "hull_energy": args.hull_energy or DEFAULT_HULL_ENERGY, **line}), flush=True)
            if args.baseline:
                # As many substitutions as the first lever offered relaxed candidates (at least 10).
                began, count = time.perf_counter(), args.baseline_count or max(offered[:1] + [10])
                settings = GenerationSettings(mode="around", count=args.n, relax=True,
                                              **({"hull_energy": args.hull_energy} if args.hull_energy else {}))
                summary = evaluate_baseline(generator, base, count, settings)
                print(json.dumps({"base": label, "lever": f"ion-substitution baseline ({count} most probable)",
                                  **summary,
                                  "seconds": round(time.perf_counter() - began, 1),
                                  "load_average_1min": round(os.getloadavg()[0], 2)}), flush=True)
    finally:
        generator.close()


if __name__ == "__main__":
    main()
