"""Relaxation speed: CHGNet, cell + positions, on generator-like candidates of 5–20 atoms.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/relax_throughput.py [--n 50] [--device cpu] [--fmax 0.1]
        [--optimizer BFGS|FIRE|LBFGS] [--profile]

Takes N mp_eform_gap crystals with 5–20 sites (every 7th by name, so the set is fixed), rattles
their positions by 0.05 Å and strains their cells by 3 % (as decoded candidates come), relaxes them
in one call and prints the wall time, the CPU time this process used (on a shared machine the
wall time mostly measures the others), steps and failures, plus the machine's load average.
``--profile`` adds where the time went (graph building, CHGNet forward + backward, optimiser).
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import time

import numpy as np


def candidates(n: int, seed: int = 0) -> list:
    from pymatgen.core import Structure

    from app.engine.training.datasets import shared_data_dir

    out = []
    with tarfile.open(shared_data_dir() / "structures" / "mp_eform_gap" / "cifs.tar.gz") as tar:
        members = sorted((m for m in tar if m.name.endswith(".cif")), key=lambda m: m.name)
        for member in members[::7]:
            structure = Structure.from_str(tar.extractfile(member).read().decode(), fmt="cif")
            if 5 <= len(structure) <= 20:
                structure.apply_strain(0.03)
                structure.perturb(0.05, seed=seed + len(out))  # the same rattle every run
                out.append(structure)
            if len(out) == n:
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fmax", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--optimizer", default="BFGS")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    from app.engine.core.threads import configure_threads
    from app.engine.stability.relax import load_chgnet, relax_structures

    threads = configure_threads()
    structures = candidates(args.n)
    began = time.perf_counter()
    load_chgnet(args.device)
    load_seconds = time.perf_counter() - began
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    began, cpu_began = time.perf_counter(), time.process_time()
    results = relax_structures(structures, fmax=args.fmax, max_steps=args.steps, device=args.device,
                               optimizer=args.optimizer)
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    if profiler is not None:
        profiler.disable()
    print(json.dumps({
        "structures": len(results), "sites": [min(map(len, structures)), max(map(len, structures))],
        "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
        "model_load_seconds": round(load_seconds, 1), "optimizer": args.optimizer,
        "failed": sum(r.error is not None for r in results),
        "converged": sum(r.converged for r in results),
        "mean_steps": round(float(np.mean([r.steps for r in results])), 1),
        "structure_steps": int(sum(r.steps for r in results)),
        "threads": threads, "load_average_1min": os.getloadavg()[0], "device": args.device,
    }, indent=1))
    if profiler is not None:
        print(json.dumps(_breakdown(profiler), indent=1))


def _breakdown(profiler) -> dict:
    """Cumulative seconds of the parts of a relaxation step (nested parts are not subtracted)."""
    import pstats

    parts = {"graph building (CrystalGraphConverter)": ("chgnet/graph/converter.py", "forward"),
             "batched graph assembly (BatchedGraph.from_graphs)": ("chgnet/model/model.py", "from_graphs"),
             "CHGNet forward (_compute, backward excluded)": ("chgnet/model/model.py", "_compute"),
             "backward (forces and stress)": ("torch/autograd/__init__.py", "grad"),
             "cell filter forces (FrechetCellFilter)": ("ase/filters.py", "get_forces"),
             "optimiser steps (forces inside them cached)": ("ase/optimize/", "step"),
             "divergence checks": ("stability/relax.py", "_geometry_problem"),
             "pymatgen <-> ASE conversion": ("stability/relax.py", "structure")}
    stats = pstats.Stats(profiler).stats
    out = {}
    for label, (where, name) in parts.items():
        out[label] = round(sum(v[3] for (file, _line, function), v in stats.items()
                               if where in file and function == name), 2)
    return out


if __name__ == "__main__":
    main()
