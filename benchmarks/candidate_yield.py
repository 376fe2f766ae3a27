"""Yield of unique, structurally novel (and, where the hull and relaxation are installed, stable)
candidates per 200 samples around held-out ABX3 perovskites, for a few generation settings.

Usage: ``python benchmarks/candidate_yield.py [--n 200] [--bases 3] [--relax]``; prints one JSON
line per (base, setting) with the funnel, the S.U.N. count and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

SETTINGS = {
    "default (sigma 0.5, base decile)": {},
    "sigma 1.0": {"sigma": 1.0},
    "sigma 1.5": {"sigma": 1.5},
    "decile 0 (lowest formation energies)": {"decile": 0},
    "sigma 1.0, decile 0": {"sigma": 1.0, "decile": 0},
}


def main() -> None:
    from app.engine.generation.generator import CrystalGenerator
    from app.engine.generation.settings import GenerationSettings
    from app.engine.training.evaluate_generator import held_out_perovskite_bases

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--bases", type=int, default=3)
    parser.add_argument("--relax", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    generator = CrystalGenerator(device="auto")
    try:
        for label, base in held_out_perovskite_bases(args.bases):
            for name, options in SETTINGS.items():
                began = time.perf_counter()
                settings = GenerationSettings(mode="around", count=args.n, seed=1, relax=args.relax,
                                              require_near_hull=args.relax, **options)
                result = generator.generate(settings, base=base)
                novel = sum(bool(c.novelty is not None and c.novelty.is_novel) for c in result.candidates if c.kept)
                print(json.dumps({"base": label, "setting": name, "funnel": result.funnel, "sun": result.sun,
                                  "kept_novel": novel, "seconds": round(time.perf_counter() - began, 1)}), flush=True)
    finally:
        generator.close()


if __name__ == "__main__":
    main()
