"""Whole-process prediction speed: ``crystal-designer predict`` on 1,000 held-out MP CIFs.

Usage::

    .venv/bin/python benchmarks/predict_throughput.py [--n 1000] [--cores 2] [--precision auto]

Extracts the first N validation-split CIFs (by material-id hash, as the trainers split; sorted
by name) of ``../shared/data/structures/mp_eform_gap/cifs.tar.gz`` to a temporary folder under
/tmp, then runs the ``crystal-designer predict`` command on it as a separate process, start-up
and model loading included, and prints CIFs per second and the peak resident memory of the
process tree (the largest of the process and its file-reading workers, and their sum).
The public CGCNN ``predict.py`` reference made 47 CIFs/s on the same kind of files and 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from app.engine.training.datasets import is_validation, shared_data_dir

REFERENCE_CIFS_PER_SECOND = 47.0


def extract_validation_cifs(folder: Path, n: int) -> int:
    """Write the first ``n`` validation-split CIFs into ``folder``; returns how many."""
    with tarfile.open(shared_data_dir() / "structures" / "mp_eform_gap" / "cifs.tar.gz") as tar:
        members = sorted((m for m in tar if m.name.endswith(".cif") and is_validation(Path(m.name).stem)),
                         key=lambda m: m.name)[:n]
        for member in members:
            (folder / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    return len(members)


def tree_rss_mb(pid: int) -> tuple[float, float]:
    """(largest single process, sum) resident memory in MB of ``pid`` and its descendants."""
    sizes, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            sizes.append(int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmRSS"))) / 1024)
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return (max(sizes), sum(sizes)) if sizes else (0.0, 0.0)


def run_predict(folder: Path, cores: int, extra: list[str] | None = None) -> dict:
    """Run ``crystal-designer predict`` on ``folder`` with ``cores`` cores; wall time and peak memory."""
    env = {**os.environ, "CRYSTAL_DESIGNER_CORES": str(cores)}
    env.pop("OMP_NUM_THREADS", None)
    command = [sys.executable, "-m", "app.cli", "predict", str(folder), "--workers", str(cores), *(extra or [])]
    began = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = [0.0, 0.0]

    def sample() -> None:
        while process.poll() is None:
            largest, total = tree_rss_mb(process.pid)
            peak[0], peak[1] = max(peak[0], largest), max(peak[1], total)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = process.communicate()
    seconds = time.perf_counter() - began
    sampler.join()
    records = json.loads(stdout)
    return {"structures": len(records), "failed": sum(1 for r in records if r["error"]),
            "seconds": round(seconds, 2), "cifs_per_second": round(len(records) / seconds, 1),
            "peak_rss_largest_process_mb": round(peak[0], 1), "peak_rss_all_processes_mb": round(peak[1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        folder = Path(tmp)
        extract_validation_cifs(folder, args.n)
        result = run_predict(folder, args.cores)
    result["speed_up_over_cgcnn_reference"] = round(result["cifs_per_second"] / REFERENCE_CIFS_PER_SECOND, 2)
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
