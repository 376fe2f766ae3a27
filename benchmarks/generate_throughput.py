"""End-to-end generation speed: decode + segment + build + eight properties + filters.

Usage::

    .venv/bin/python benchmarks/generate_throughput.py [--n 1000] [--base resources/examples/SrTiO3.cif]

Prints valid candidates (all distances > 0.5 Å) per second, kept candidates, the funnel and the
peak resident memory of the process and of the largest segmentation worker (decoded maps are
segmented in one process per core, see ``CrystalGenerator``).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from app.engine.crystal_io import read_crystal_file
from app.engine.generator import CrystalGenerator, GenerationSettings
from app.engine.paths import examples_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--base", default=str(examples_dir() / "SrTiO3.cif"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="segmentation processes (default: CPU count)")
    args = parser.parse_args()
    torch.set_num_threads(2)

    began = time.perf_counter()
    generator = CrystalGenerator(device=args.device, segmentation_workers=args.workers)
    load_seconds = time.perf_counter() - began
    base = read_crystal_file(args.base)[0].structure
    settings = GenerationSettings(mode="around", count=args.n, seed=0, batch_size=args.batch_size)
    began = time.perf_counter()
    try:
        result = generator.generate(settings, base=base)
    finally:
        generator.close()
    seconds = time.perf_counter() - began
    valid = result.funnel["distance_ok"]
    print(json.dumps({
        "samples": args.n, "seconds": round(seconds, 1),
        "valid_candidates_per_second": round(valid / seconds, 2),
        "samples_per_second": round(args.n / seconds, 2),
        "funnel": result.funnel, "model_load_seconds": round(load_seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
