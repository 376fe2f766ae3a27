"""Peak memory of one campaign worker: the generator and predictor loaded, one chunk generated.

Usage::

    .venv/bin/python benchmarks/worker_memory.py [--chunk 128]

Runs one campaign task in this process exactly as a Dask worker does (``run_chunk``, models
loaded once, relaxation off) and prints its peak resident memory and the chunk's output size.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from app.engine.campaign.runtime import plan_tasks, run_chunk
from app.engine.generation.settings import GenerationSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunk", type=int, default=128)
    args = parser.parse_args()
    base = Path(__file__).resolve().parents[1] / "resources" / "examples" / "SrTiO3.cif"
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        task = plan_tasks([str(base)], args.chunk, GenerationSettings(relax=False), 0, Path(tmp), args.chunk)[0]
        began = time.perf_counter()
        summary = run_chunk(task)
        seconds = time.perf_counter() - began
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    print(json.dumps({"samples": task.count, "seconds_including_model_load": round(seconds, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "output_bytes_per_sample": round(size / task.count, 1), "funnel": summary["funnel"]},
                     indent=2))


if __name__ == "__main__":
    main()
