"""PointNet prediction speed on real crystals, beside CGCNN on the same structures.

Usage::

    .venv/bin/python benchmarks/pointnet_throughput.py [--n 1000] [--threads 2] [--repeats 3] [--no-cgcnn]

Parses the first N CIFs (sorted by name) of ``../shared/data/structures/mp_eform_gap`` once
(parsing costs the same for every model and is not timed), then times, per predictor, the
inference from ``Structure`` objects to the eight properties: ``predict`` (featurisation —
point cloud or neighbour graph — plus the network(s) plus the derived properties). Prints
structures per second of each (best of ``--repeats``), and the PointNet network alone, with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import os
import tarfile
import time
import warnings
from pathlib import Path

import torch


def _structures(n: int) -> list:
    from pymatgen.core import Structure

    from app.engine.training.datasets import shared_data_dir

    archive = shared_data_dir() / "structures" / "mp_eform_gap" / "cifs.tar.gz"
    # Two streaming passes (names, then the chosen members in archive order): extracting members in
    # sorted order makes gzip decompress from the start for each one.
    with tarfile.open(archive, "r|gz") as tar:
        wanted = set(sorted(m.name for m in tar if m.name.endswith(".cif"))[:n])
    texts = {}
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            if member.name in wanted:
                texts[member.name] = tar.extractfile(member).read().decode()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [Structure.from_str(texts[name], fmt="cif") for name in sorted(texts)]


def _best_rate(function, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - began)
    return n / best


def main() -> None:
    from app.engine.properties.point_cloud import collate_clouds, point_cloud
    from app.engine.properties.pointnet import batch_to_tensors
    from app.engine.properties.pointnet_predictor import PointNetPredictor
    from app.engine.properties.predictor import PropertyPredictor

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cgcnn", action="store_true", help="time the PointNet only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    structures = _structures(args.n)
    n_atoms = sum(len(s) for s in structures) / len(structures)
    print(f"{len(structures)} MP crystals, {n_atoms:.1f} atoms on average; torch threads {args.threads}")
    pointnet = PointNetPredictor(device="cpu")
    predictors = [("pointnet", pointnet)] + ([] if args.no_cgcnn else [("cgcnn", PropertyPredictor(device="cpu"))])
    for name, predictor in predictors:
        predictor.predict(structures[:64])  # warm-up
        rate = _best_rate(lambda p=predictor: p.predict(structures, batch_size=256), len(structures), args.repeats)
        print(f"{name:9s} structures -> eight properties: {rate:8.0f} structures/s")
    clouds = [point_cloud(s) for s in structures]
    rate = _best_rate(lambda: [point_cloud(s) for s in structures], len(structures), args.repeats)
    print(f"pointnet  point clouds alone:               {rate:8.0f} structures/s")
    clouds.sort(key=lambda c: c.n_atoms)  # as the predictor batches them
    batches = [batch_to_tensors(collate_clouds(clouds[i : i + 256])) for i in range(0, len(clouds), 256)]

    def network():
        with torch.inference_mode():
            for batch in batches:
                pointnet.model.predict(batch)

    rate = _best_rate(network, len(structures), args.repeats)
    print(f"pointnet  network alone (batches of 256):   {rate:8.0f} structures/s")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
