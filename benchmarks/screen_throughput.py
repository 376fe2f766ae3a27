"""Campaign scaling: samples per second of ``crystal-designer screen`` with 1 and 2 local workers.

Usage::

    .venv/bin/python benchmarks/screen_throughput.py [--n-per-base 192] [--chunk 32] [--workers 1 2]

Runs the same campaign (around the shipped SrTiO3 example, relaxation off, seed 0) in fresh
folders under /tmp with a local cluster of K single-threaded worker processes and prints, for
each K, the wall time, samples/s, the funnel and the output size per sample; then the speed-up.
Each worker loads its models before the clock starts (``warm_up_seconds``, a fixed cost per
worker process that a long campaign pays once), so the rates are the campaign's steady state;
``rate_with_start_up`` includes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from app.engine.campaign.runtime import local_client, run_campaign, worker_generator
from app.engine.generation.settings import GenerationSettings


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _threads() -> dict:
    """Torch intra-op threads and OpenMP setting of the process it runs in (a campaign worker)."""
    import torch

    return {"torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-per-base", type=int, default=192)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--base", default=str(Path(__file__).resolve().parents[1] / "resources" / "examples"
                                              / "SrTiO3.cif"))
    args = parser.parse_args()
    report = {"load_average_1min_before": round(os.getloadavg()[0], 2), "runs": {}}
    for workers in args.workers:
        out = Path(tempfile.mkdtemp(dir="/tmp", prefix="screen-bench-"))
        began = time.perf_counter()
        client = local_client(workers)
        try:
            client.run(lambda: worker_generator() is not None)  # models loaded in every worker
            warm_up = time.perf_counter() - began
            threads = list(client.run(_threads).values())
            began = time.perf_counter()
            result = run_campaign([args.base], args.n_per_base, GenerationSettings(relax=False), out, seed=0,
                                  client=client, chunk=args.chunk)
            seconds = time.perf_counter() - began
            report["runs"][workers] = {
                "seconds": round(seconds, 1), "samples": result.samples,
                "samples_per_second": round(result.samples / seconds, 2),
                "warm_up_seconds": round(warm_up, 1), "worker_threads": threads,
                "rate_with_start_up": round(result.samples / (seconds + warm_up), 2),
                "kept": result.kept, "funnel": result.funnel,
                "output_bytes_per_sample": round(folder_bytes(out) / max(1, result.samples), 1),
            }
        finally:
            cluster = client.cluster
            client.close()
            cluster.close()
            shutil.rmtree(out, ignore_errors=True)
    rates = [report["runs"][w]["samples_per_second"] for w in args.workers]
    if len(rates) > 1:
        report["speed_up"] = round(rates[-1] / rates[0], 2)
    report["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
