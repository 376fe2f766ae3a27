"""Campaign scaling: samples per second of ``crystal-designer screen`` with 1 and 2 local workers.

Usage::

    .venv/bin/python benchmarks/screen_throughput.py [--n-per-base 2048] [--chunk 128] [--workers 1 2]

Runs the same campaign (around the shipped SrTiO3 example, relaxation off, seed 0) in fresh
folders under /tmp on a local cluster of K single-threaded worker processes (one torch/OpenMP
thread each: one per core it owns) and prints, for each K:

- ``cluster_start_seconds`` and ``warm_up_seconds``: starting the K processes, then
  :func:`~app.engine.campaign.runtime.warm_up_worker` in each (models, structure index, hull,
  first Parquet write: a fixed cost per worker process, paid once by a campaign of any length);
- ``seconds`` / ``samples_per_second``: the campaign itself with warm workers (the steady state:
  planning, every chunk's generation, filtering, prediction, Parquet and CIF writes, the
  driver's aggregation);
- ``rate_with_start_up``: the same samples over start + warm-up + campaign;
- ``cpu_seconds_per_sample``: the chunks' own CPU time (less sensitive to other load than wall
  time), and ``cores_used`` (their CPU time over the wall time: K when the K workers had their
  cores, so a speed-up below K with ``cores_used`` below K means the machine was shared, not
  that the campaign scales badly); ``worker_rss_mb``; ``output_bytes_per_sample``;

then the speed-ups (steady state and with start-up) and what a 10^6-sample campaign needs at the
measured rate (worker-hours, output size, memory per worker).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from app.engine.campaign.runtime import local_client, run_campaign, warm_up_worker
from app.engine.generation.settings import GenerationSettings

MILLION = 1_000_000


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _worker_state() -> dict:
    """Torch threads, OpenMP setting and resident memory of the process it runs in (a worker)."""
    import psutil
    import torch

    return {"torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "rss_mb": round(psutil.Process().memory_info().rss / 1e6, 1)}


def run_once(workers: int, base: str, n_per_base: int, chunk: int) -> dict:
    out = Path(tempfile.mkdtemp(dir="/tmp", prefix="screen-bench-"))
    began = time.perf_counter()
    client = local_client(workers)
    try:
        client.wait_for_workers(workers)
        start = time.perf_counter() - began
        warm = client.run(warm_up_worker, base)
        warm_up = time.perf_counter() - began - start
        began = time.perf_counter()
        result = run_campaign([base], n_per_base, GenerationSettings(relax=False), out, seed=0, client=client,
                              chunk=chunk)
        seconds = time.perf_counter() - began
        states = list(client.run(_worker_state).values())
        chunks = [json.loads(p.read_text()) for p in (out / "chunks").glob("*.json")]
        cpu = sum(c.get("cpu_seconds", 0.0) for c in chunks)
        return {
            "seconds": round(seconds, 2), "samples": result.samples,
            "samples_per_second": round(result.samples / seconds, 2),
            "cluster_start_seconds": round(start, 2), "warm_up_seconds": round(warm_up, 2),
            "warm_up_seconds_per_worker": [round(v, 2) for v in warm.values()],
            "rate_with_start_up": round(result.samples / (seconds + start + warm_up), 2),
            "cpu_seconds_per_sample": round(cpu / max(1, result.samples), 4),
            # Cores the workers actually got: K on a quiet machine; less when other work shares it.
            "cores_used": round(cpu / seconds, 2),
            "tasks": len(chunks), "worker_threads": [{k: s[k] for k in ("torch_threads", "OMP_NUM_THREADS")}
                                                      for s in states],
            "worker_rss_mb": [s["rss_mb"] for s in states],
            "kept": result.kept, "funnel": result.funnel,
            "output_bytes_per_sample": round(folder_bytes(out) / max(1, result.samples), 1),
        }
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
        shutil.rmtree(out, ignore_errors=True)


def million_sample_campaign(run: dict, workers: int) -> dict:
    """What 10^6 samples need at the rate of ``run`` (measured with ``workers`` workers): core-hours
    from the chunks' CPU time (valid on a shared machine too) and worker-hours from the wall-clock
    rate (valid on a quiet one)."""
    per_worker = run["samples_per_second"] / workers
    core_hours = run["cpu_seconds_per_sample"] * MILLION / 3600
    return {"core_hours_from_cpu_time": round(core_hours, 2),
            "hours_on_100_cores_from_cpu_time": round(core_hours / 100, 3),
            "worker_hours_from_wall_rate": round(MILLION / per_worker / 3600, 2),
            "output_gb": round(run["output_bytes_per_sample"] * MILLION / 1e9, 2),
            "memory_per_worker_mb": max(run["worker_rss_mb"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-per-base", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--base", default=str(Path(__file__).resolve().parents[1] / "resources" / "examples"
                                              / "SrTiO3.cif"))
    args = parser.parse_args()
    report = {"load_average_1min_before": round(os.getloadavg()[0], 2), "runs": {}}
    for workers in args.workers:
        report["runs"][workers] = run_once(workers, args.base, args.n_per_base, args.chunk)
    runs = [report["runs"][w] for w in args.workers]
    if len(runs) > 1:
        report["speed_up"] = round(runs[-1]["samples_per_second"] / runs[0]["samples_per_second"], 2)
        report["speed_up_with_start_up"] = round(runs[-1]["rate_with_start_up"] / runs[0]["rate_with_start_up"], 2)
    report["million_samples"] = million_sample_campaign(runs[-1], args.workers[-1])
    report["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
