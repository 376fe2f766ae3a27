"""Relaxation speed: CHGNet, cell + positions, on generator-like candidates of 5–20 atoms.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/relax_throughput.py [--n 50] [--device cpu] [--fmax 0.1]

Takes N mp_eform_gap crystals with 5–20 sites (every 7th by name, so the set is fixed), rattles
their positions by 0.05 Å and strains their cells by 3 % (as decoded candidates come), relaxes them
in one call and prints the wall time, steps and failures, plus the machine's load average.
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

    rng = np.random.default_rng(seed)
    out = []
    with tarfile.open(shared_data_dir() / "structures" / "mp_eform_gap" / "cifs.tar.gz") as tar:
        members = sorted((m for m in tar if m.name.endswith(".cif")), key=lambda m: m.name)
        for member in members[::7]:
            structure = Structure.from_str(tar.extractfile(member).read().decode(), fmt="cif")
            if 5 <= len(structure) <= 20:
                structure.apply_strain(0.03)
                structure.perturb(0.05)
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
    args = parser.parse_args()

    from app.engine.core.threads import configure_threads
    from app.engine.stability.relax import load_chgnet, relax_structures

    threads = configure_threads()
    structures = candidates(args.n)
    began = time.perf_counter()
    load_chgnet(args.device)
    load_seconds = time.perf_counter() - began
    began = time.perf_counter()
    results = relax_structures(structures, fmax=args.fmax, max_steps=args.steps, device=args.device)
    seconds = time.perf_counter() - began
    print(json.dumps({
        "structures": len(results), "sites": [min(map(len, structures)), max(map(len, structures))],
        "seconds": round(seconds, 1), "model_load_seconds": round(load_seconds, 1),
        "failed": sum(r.error is not None for r in results),
        "converged": sum(r.converged for r in results),
        "mean_steps": round(float(np.mean([r.steps for r in results])), 1),
        "threads": threads, "load_average_1min": os.getloadavg()[0], "device": args.device,
    }, indent=1))


if __name__ == "__main__":
    main()
