"""Does bfloat16 prediction keep the models' accuracy? fp32 vs bf16 on validation crystals.

Usage::

    .venv/bin/python benchmarks/precision_check.py [--n 2000]

Takes the first N validation-split crystals (by material id hash, as the trainers split) of
``mp_eform_gap`` and of the elastic and optical sets, predicts them in float32 and in bfloat16
(CPU autocast), and prints, per model output, the validation MAE in each precision and the
mean |bf16 − fp32| difference, and the share of bf16 outputs that sit on a bfloat16 grid
(standardised value ``(y - mean) / std`` with 8 significant bits, i.e. steps of std/128 for
|value| in [1, 2): the sign of a bfloat16 output layer) and how many distinct values each precision
gives. bfloat16 is acceptable where the MAE changes by < 1 % and few outputs sit on the grid.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time

import numpy as np
import torch

from app.engine.properties.predictor import PropertyPredictor, graph_for_prediction
from app.engine.training.datasets import (is_validation, read_elastic, read_mp_eform_gap, read_optical,
                                          shared_data_dir, to_structure)

#: Which model output each dataset label checks.
CHECKS = {
    "mp_eform_gap": (read_mp_eform_gap, {"formation_energy_per_atom": ("formation_energy", 0),
                                          "band_gap": ("band_gap", 0)}),
    "elastic": (read_elastic, {"log10_bulk_modulus": ("elastic", 0), "log10_shear_modulus": ("elastic", 1),
                               "poisson_ratio": ("elastic", 2)}),
    "optical": (read_optical, {"refractive_index": ("optical", 0)}),
}


def on_bfloat16_grid(values: np.ndarray, model, column: int) -> np.ndarray:
    """True where ``(values - mean) / std`` of that output is (to float32 rounding) a bfloat16 number."""
    mean, std = float(model.target_mean[column]), float(model.target_std[column])
    standardised = (values.astype(np.float64) - mean) / std
    snapped = torch.from_numpy(standardised.astype(np.float32)).to(torch.bfloat16).double().numpy()
    return np.abs(standardised - snapped) <= 1e-5 * np.maximum(np.abs(standardised), 1e-2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000, help="validation crystals per dataset (at most)")
    args = parser.parse_args()
    root = shared_data_dir()
    predictors = {p: PropertyPredictor(device="cpu", precision=p) for p in ("float32", "bfloat16")}
    report = {}
    for dataset, (reader, labels) in CHECKS.items():
        records = itertools.islice((r for r in reader(root) if is_validation(r.material_id)), args.n)
        graphs, truth = [], []
        for record in records:
            try:
                graphs.append(graph_for_prediction(to_structure(record)))
            except Exception:  # unreadable records are skipped as the trainers skip them
                continue
            truth.append(record.labels)
        outputs, seconds = {}, {}
        for p, predictor in predictors.items():
            start = time.process_time()
            outputs[p] = predictor.predict_graphs(graphs)
            seconds[p] = time.process_time() - start
        report[f"{dataset}:cpu_seconds"] = {p: round(t, 2) for p, t in seconds.items()}
        for label, (model, column) in labels.items():
            y = np.array([t.get(label, math.nan) for t in truth], dtype=float)
            ok = np.isfinite(y)
            values = {p: out[model][:, column].astype(float) for p, out in outputs.items()}
            mae = {p: float(np.mean(np.abs(v[ok] - y[ok]))) for p, v in values.items()}
            report[f"{dataset}:{label}"] = {
                "n": int(ok.sum()),
                "mae_float32": round(mae["float32"], 5),
                "mae_bfloat16": round(mae["bfloat16"], 5),
                "mae_change_percent": round(100 * (mae["bfloat16"] - mae["float32"]) / mae["float32"], 2),
                "mean_abs_difference": round(float(np.mean(np.abs(values["bfloat16"] - values["float32"]))), 5),
                "share_on_bfloat16_grid": round(float(np.mean(on_bfloat16_grid(
                    values["bfloat16"], predictors["bfloat16"].models[model], column))), 4),
                "distinct_values": {p: int(len(np.unique(v))) for p, v in values.items()},
            }
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
