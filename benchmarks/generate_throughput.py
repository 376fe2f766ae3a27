"""End-to-end generation speed: decode + segment + build + eight properties + filters.

Usage::

    .venv/bin/python benchmarks/generate_throughput.py [--n 600] [--base resources/examples/SrTiO3.cif] [--no-relax]

``--no-relax`` measures the generation stages alone (sample, decode, segment, build, predict,
filter): the figure issue 12's 25 valid candidates/s refers to, set before relaxation existed.
With relaxation (the default) the CHGNet stage dominates; its own speed is
``benchmarks/relax_throughput.py`` (50 candidates in ≤ 60 s).

Around a cubic ABX3 perovskite such as SrTiO3 the generator picks the periodic model
(``CrystalGenerator.model_for``), so that is what the default ``--model auto`` measures;
``--model cubic`` measures the paper's cubic model and its segmentation on the same base.

Prints the model, the CPU time per valid candidate (which compares code versions on a loaded
machine), valid candidates (all distances > 0.5 Å) per second, kept candidates, the funnel and the
peak resident memory of the process and of the largest segmentation worker (decoded maps are
segmented in one process per core, see ``CrystalGenerator``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from pathlib import Path

from app.engine.io.crystal_io import read_crystal_file
from app.engine.generation.generator import CrystalGenerator, GenerationSettings
from app.engine.core.paths import examples_dir


def _tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of a process and all its descendants, from /proc (Linux).

    Shared pages are counted once per process, so this overstates the true total.
    """
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _PeakTreeMemory(threading.Thread):
    """Samples :func:`_tree_rss_mb` of this process twice a second; ``peak`` in MB."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.peak = max(self.peak, _tree_rss_mb(os.getpid()))


def main() -> None:
    import torch  # here, not at the top: spawned segmentation workers re-import this script

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--base", default=str(examples_dir() / "SrTiO3.cif"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="segmentation processes (default: CPU count)")
    parser.add_argument("--model", choices=("auto", "cubic", "periodic"), default="auto",
                        help="auto (default): the model the generator picks for the base, as a user gets it")
    parser.add_argument("--no-relax", action="store_true", help="skip the CHGNet relaxation stage")
    args = parser.parse_args()
    torch.set_num_threads(2)

    began = time.perf_counter()
    generator = CrystalGenerator.from_models(device=args.device, segmentation_workers=args.workers)
    load_seconds = time.perf_counter() - began
    base = read_crystal_file(args.base)[0].structure
    model = generator.model_for(base) if args.model == "auto" else args.model
    settings = GenerationSettings(mode="around", count=args.n, seed=0, batch_size=args.batch_size,
                                  relax=not args.no_relax)
    began, cpu_began = time.perf_counter(), cpu_seconds()
    sampler = _PeakTreeMemory()
    sampler.start()
    try:
        result = generator.generate(settings, base=base, model=model)
    finally:
        generator.close()
        sampler.done.set()
    seconds, cpu = time.perf_counter() - began, cpu_seconds() - cpu_began
    valid = result.funnel["distance_ok"]
    print(json.dumps({
        "model": model, "relax": not args.no_relax, "samples": args.n, "seconds": round(seconds, 1),
        "valid_candidates_per_second": round(valid / seconds, 2),
        "samples_per_second": round(args.n / seconds, 2),
        # On a loaded machine wall time mostly measures the others' jobs; CPU time per valid
        # candidate compares code versions (2 cores: at best 2 / cpu_ms × 1000 candidates/s).
        "cpu_seconds": round(cpu, 1), "cpu_ms_per_valid_candidate": round(1000 * cpu / max(valid, 1), 1),
        "funnel": result.funnel, "model_load_seconds": round(load_seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "peak_rss_all_processes_mb": round(sampler.peak, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
