"""End-to-end prediction speed: parse + graph + eight-property models on real CIFs.

Usage::

    .venv/bin/python benchmarks/predict_throughput.py [--n 1000] [--workers 2] [--device cpu]

Takes the first N CIFs (sorted by name) of ``../shared/data/structures/mp_eform_gap``, writes them
to a temporary folder, and times ``predict_files`` on that folder as the CLI would run it.
Prints structures per second and the peak resident memory of the process and its workers.
"""

from __future__ import annotations

import argparse
import json
import resource
import tarfile
import tempfile
import time
from pathlib import Path

from app.engine.properties.predict_files import predict_files
from app.engine.properties.predictor import PropertyPredictor
from app.engine.training.datasets import shared_data_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with tarfile.open(shared_data_dir() / "structures" / "mp_eform_gap" / "cifs.tar.gz") as tar:
            members = sorted((m for m in tar if m.name.endswith(".cif")), key=lambda m: m.name)[: args.n]
            for member in members:
                (folder / Path(member.name).name).write_bytes(tar.extractfile(member).read())

        began = time.perf_counter()
        predictor = PropertyPredictor(device=args.device)
        load_seconds = time.perf_counter() - began

        began = time.perf_counter()
        records = predict_files([folder], predictor, workers=args.workers)
        seconds = time.perf_counter() - began

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    failed = sum(1 for r in records if r["error"])
    print(json.dumps({
        "structures": len(records),
        "failed": failed,
        "seconds": round(seconds, 2),
        "structures_per_second": round(len(records) / seconds, 1),
        "model_load_seconds": round(load_seconds, 2),
        "peak_rss_main_mb": round(own, 1),
        "peak_rss_largest_worker_mb": round(children, 1),
        "device": str(predictor.device),
    }, indent=2))


if __name__ == "__main__":
    main()
