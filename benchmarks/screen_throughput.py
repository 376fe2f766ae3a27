"""Campaign scaling: samples per second of ``crystal-designer screen`` with 1 and 2 local workers.

Usage::

    .venv/bin/python benchmarks/screen_throughput.py [--n-per-base 512] [--chunk 128] [--workers 1 2]

Runs the same campaign (around the shipped SrTiO3 example, relaxation off, seed 0) in fresh
folders under /tmp with a local cluster of K single-threaded worker processes and prints, for
each K, the wall time, samples/s, the funnel and the output size per sample; then the speed-up.
Worker start-up and model loading are included (they are a fixed ~10-20 s per worker).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from app.engine.campaign.runtime import run_campaign
from app.engine.generation.settings import GenerationSettings


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-per-base", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--base", default=str(Path(__file__).resolve().parents[1] / "resources" / "examples"
                                              / "SrTiO3.cif"))
    args = parser.parse_args()
    report = {"load_average_1min_before": round(os.getloadavg()[0], 2), "runs": {}}
    for workers in args.workers:
        out = Path(tempfile.mkdtemp(dir="/tmp", prefix="screen-bench-"))
        try:
            began = time.perf_counter()
            result = run_campaign([args.base], args.n_per_base, GenerationSettings(relax=False), out, seed=0,
                                  local_workers=workers, chunk=args.chunk)
            seconds = time.perf_counter() - began
            report["runs"][workers] = {
                "seconds": round(seconds, 1), "samples": result.samples,
                "samples_per_second": round(result.samples / seconds, 2),
                "kept": result.kept, "funnel": result.funnel,
                "output_bytes_per_sample": round(folder_bytes(out) / max(1, result.samples), 1),
            }
        finally:
            shutil.rmtree(out, ignore_errors=True)
    rates = [report["runs"][w]["samples_per_second"] for w in args.workers]
    if len(rates) > 1:
        report["speed_up"] = round(rates[-1] / rates[0], 2)
    report["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
