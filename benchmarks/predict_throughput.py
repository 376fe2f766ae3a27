"""Whole-process prediction speed: ``crystal-designer predict`` on 1,000 held-out MP CIFs.

Usage::

    .venv/bin/python benchmarks/predict_throughput.py [--n 1000] [--cores 2] [--precision auto]

Extracts the first N validation-split CIFs (by material-id hash, as the trainers split; sorted
by name) of ``../shared/data/structures/mp_eform_gap/cifs.tar.gz`` to a folder under
/tmp (once; later runs reuse it), then runs the ``crystal-designer predict`` command on it as a separate process, start-up
and model loading included, and prints CIFs per second and the peak resident memory of the
process tree (the largest of the process and its file-reading workers, and their sum).
The public CGCNN ``predict.py`` reference made 47 CIFs/s on the same kind of files and 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
    """Write the first ``n`` validation-split CIFs (sorted by name) into ``folder``; returns how many.

    Two streaming passes over the archive (names, then contents in archive order): reading the
    members in sorted order instead makes gzip decompress from the start for each one (~80 s).
    """
    archive = shared_data_dir() / "structures" / "mp_eform_gap" / "cifs.tar.gz"
    with tarfile.open(archive, "r|gz") as tar:
        names = sorted(m.name for m in tar if m.name.endswith(".cif") and is_validation(Path(m.name).stem))
    wanted = set(names[:n])
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            if member.name in wanted:
                (folder / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    return len(wanted)


def cached_validation_cifs(n: int) -> Path:
    """Folder under /tmp holding the first ``n`` validation CIFs, extracted once and reused."""
    folder = Path(tempfile.gettempdir()) / f"crystal-designer-benchmark-cifs-{n}"
    done = folder / ".complete"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.cif"):
            old.unlink()
        done.write_text(str(extract_validation_cifs(folder, n)))
    return folder


_TICKS = os.sysconf("SC_CLK_TCK")


def tree_rss_mb(pid: int, cpu_seconds: dict[int, float] | None = None) -> tuple[float, float]:
    """(largest single process, sum) resident memory in MB of ``pid`` and its descendants; also
    records each one's CPU time so far (s) into ``cpu_seconds`` by process id."""
    sizes, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            sizes.append(int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmRSS"))) / 1024)
            if cpu_seconds is not None:
                fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
                cpu_seconds[current] = (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return (max(sizes), sum(sizes)) if sizes else (0.0, 0.0)


def run_predict(folder: Path, cores: int, extra: list[str] | None = None) -> dict:
    """Run ``crystal-designer predict`` on ``folder`` with ``cores`` cores; wall time and peak memory."""
    env = {**os.environ, "CRYSTAL_DESIGNER_CORES": str(cores)}
    env.pop("OMP_NUM_THREADS", None)
    command = [sys.executable, "-m", "app.cli", "predict", str(folder), "--workers", str(cores), *(extra or [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = [0.0, 0.0]
    cpu_seconds: dict[int, float] = {}

    def sample() -> None:
        while process.poll() is None:
            largest, total = tree_rss_mb(process.pid, cpu_seconds)
            peak[0], peak[1] = max(peak[0], largest), max(peak[1], total)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = process.communicate()
    seconds = time.perf_counter() - began
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    records = json.loads(stdout)
    total_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"structures": len(records), "failed": sum(1 for r in records if r["error"]),
            "seconds": round(seconds, 2), "cifs_per_second": round(len(records) / seconds, 1),
            # CPU time depends far less on other work on the machine than the wall time: the whole
            # process tree's, and the main process's (last sample, up to 0.05 s short).
            "cpu_seconds_all_processes": round(total_cpu, 2),
            "cpu_seconds_main_process": round(cpu_seconds.get(process.pid, float("nan")), 2),
            "peak_rss_largest_process_mb": round(peak[0], 1), "peak_rss_all_processes_mb": round(peak[1], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    result = run_predict(cached_validation_cifs(args.n), args.cores)
    result["speed_up_over_cgcnn_reference"] = round(result["cifs_per_second"] / REFERENCE_CIFS_PER_SECOND, 2)
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
