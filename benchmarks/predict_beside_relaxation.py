"""Oversubscription: prediction beside a running CHGNet relaxation loop on the same 2 cores.

Usage::

    .venv/bin/python benchmarks/predict_beside_relaxation.py [--n 1000]

Times ``crystal-designer predict`` on N held-out MP CIFs (see ``predict_throughput.py``) three
ways and prints the slow-downs against running alone on 2 cores:

- ``alone``: predict with both cores;
- ``beside_shared``: a CHGNet relaxation loop runs in another process, and each process is given
  one core (``CRYSTAL_DESIGNER_CORES=1``, which ``configure_threads`` turns into one torch/OpenMP
  thread); the ideal slow-down is 2x (half the cores);
- ``beside_unconfigured``: the same, but both processes take every core (the old behaviour).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_throughput import cached_validation_cifs, run_predict  # noqa: E402

RELAX_LOOP = """
import os, sys
from app.engine.core.threads import configure_threads
configure_threads()
import numpy as np
from chgnet.model import StructOptimizer
from pymatgen.core import Structure
base = Structure.from_file(sys.argv[1]).make_supercell(2, in_place=False)
optimizer = StructOptimizer(use_device="cpu")
rng = np.random.default_rng(0)
print("ready", flush=True)
while True:
    trial = base.copy()
    trial.perturb(0.1)
    optimizer.relax(trial, fmax=0.01, steps=50, verbose=False)
"""


def relaxation_loop(cores: int | None, base: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if cores:
        env["CRYSTAL_DESIGNER_CORES"] = str(cores)
    process = subprocess.Popen([sys.executable, "-c", RELAX_LOOP, str(base)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    process.stdout.readline()  # "ready": CHGNet is loaded and relaxing
    time.sleep(2)
    return process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    base = Path(__file__).resolve().parents[1] / "resources" / "examples" / "SrTiO3.cif"
    report = {"load_average_1min_before": round(os.getloadavg()[0], 2)}
    folder = cached_validation_cifs(args.n)
    report["alone"] = run_predict(folder, cores=2)
    for name, cores in (("beside_shared", 1), ("beside_unconfigured", None)):
        loop = relaxation_loop(cores, base)
        try:
            if cores:
                report[name] = run_predict(folder, cores=1)
            else:  # both take every core: predict as it ran before threads were configured
                report[name] = run_predict(folder, cores=2)
        finally:
            loop.kill()
            loop.wait()
    alone = report["alone"]["seconds"]
    for name in ("beside_shared", "beside_unconfigured"):
        report[name]["slowdown_vs_alone"] = round(report[name]["seconds"] / alone, 2)
    report["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
