"""End-to-end generation speed of the periodic (all-crystal-system) model around non-cubic bases.

Usage::

    .venv/bin/python benchmarks/periodic_generate_throughput.py [--n 600] [--base PATH ...] [--no-relax]
    .venv/bin/python benchmarks/periodic_generate_throughput.py --n 10000   # the memory figure

By default two bases: rutile TiO2 (tetragonal, ``resources/examples``) and wurtzite ZnO
(hexagonal, built here from its lattice parameters and Wyckoff positions). Each base runs
``CrystalGenerator.generate`` with the default settings (``around``, σ 0.5, every filter,
CHGNet relaxation, hull and novelty) on 2 torch threads. Prints, per base and in total, valid
candidates (all distances > 0.5 Å) per second, the CPU time per valid candidate, the funnel, and the peak resident memory of the
process (``ru_maxrss``) and of the whole process tree sampled twice a second.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate_throughput import _PeakTreeMemory, cpu_seconds  # noqa: E402


def wurtzite():
    """Wurtzite ZnO, P6₃mc, a = 3.25 Å, c = 5.21 Å, u = 0.382."""
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.21), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0.0], [1 / 3, 2 / 3, 0.382]])


def main() -> None:
    import torch

    from app.engine.core.paths import examples_dir
    from app.engine.generation.generator import CrystalGenerator, GenerationSettings
    from app.engine.io.crystal_io import read_crystal_file

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=600, help="samples per base")
    parser.add_argument("--base", action="append", help="base crystal file (repeatable); default rutile and wurtzite")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-relax", action="store_true", help="skip the CHGNet relaxation stage")
    args = parser.parse_args()
    torch.set_num_threads(2)

    if args.base:
        bases = [(Path(p).stem, read_crystal_file(p)[0].structure) for p in args.base]
    else:
        bases = [("TiO2 rutile", read_crystal_file(str(examples_dir() / "TiO2_rutile.cif"))[0].structure),
                 ("ZnO wurtzite", wurtzite())]
    began = time.perf_counter()
    generator = CrystalGenerator.from_models(device="cpu")
    load_seconds = time.perf_counter() - began
    sampler = _PeakTreeMemory()
    sampler.start()
    report, total_valid, total_seconds, total_cpu = [], 0, 0.0, 0.0
    try:
        for name, base in bases:
            model = generator.model_for(base)
            settings = GenerationSettings(mode="around", count=args.n, seed=0, batch_size=args.batch_size,
                                          relax=not args.no_relax)
            began, cpu_began = time.perf_counter(), cpu_seconds()
            result = generator.generate(settings, base=base)
            seconds, cpu = time.perf_counter() - began, cpu_seconds() - cpu_began
            total_cpu += cpu
            valid = result.funnel["distance_ok"]
            total_valid += valid
            total_seconds += seconds
            report.append({"base": name, "model": model, "samples": args.n, "seconds": round(seconds, 1),
                           "valid_candidates_per_second": round(valid / seconds, 2),
                           "cpu_ms_per_valid_candidate": round(1000 * cpu / max(valid, 1), 1),
                           "funnel": result.funnel})
            del result
    finally:
        generator.close()
        sampler.done.set()
    print(json.dumps({
        "bases": report,
        "valid_candidates_per_second": round(total_valid / total_seconds, 2),
        # Wall time on a loaded machine measures the others' jobs; CPU time compares code versions.
        "cpu_ms_per_valid_candidate": round(1000 * total_cpu / max(total_valid, 1), 1),
        "model_load_seconds": round(load_seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_all_processes_mb": round(sampler.peak, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
