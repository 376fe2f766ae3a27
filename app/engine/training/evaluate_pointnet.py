"""PointNet beside CGCNN: validation MAEs of both on the same held-out crystals.

The validation rows are those of the PointNet split (material-id hash, as the CGCNN models).
Both predictors run on exactly these crystals, featurised here from the same shared-data records
as the application featurises a file: point clouds for the PointNet, neighbour graphs for CGCNN.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import warnings
from pathlib import Path

import numpy as np

from app.engine.core.property_table import METALLIC_GAP_THRESHOLD_EV
from app.engine.training.datasets import LabelledCrystal, to_structure
from app.engine.training.train_pointnet import (DATASETS, TARGET_RECIPES, TARGETS, labels_of, load_shipped,
                                                predict_rows, split_rows)
from app.engine.training.train_property import mean_absolute_errors

logger = logging.getLogger(__name__)

#: The seed paper's PointNet MAEs (its own data and 5-fold split), for reference.
SEED_POINTNET_MAE = {"formation_energy_per_atom": 0.064, "band_gap": 0.306, "poisson_ratio": 0.046}


def _graph(record: LabelledCrystal):
    from app.engine.properties.predictor import graph_for_prediction

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return (record.source, record.material_id), graph_for_prediction(to_structure(record))
    except Exception as error:  # a row that cannot be read is left out of both predictors' MAEs
        logger.warning("skipping %s: %s", record.material_id, error)
        return (record.source, record.material_id), None


def cgcnn_predictions(records: list[LabelledCrystal], folder: Path | None = None,
                      workers: int = 2) -> dict[tuple[str, str], np.ndarray]:
    """Shipped CGCNN predictions of ``records``, ``{(source, material id): values in TARGETS order}``."""
    from app.engine.properties.pointnet_predictor import OUTPUT_LAYOUT
    from app.engine.properties.predictor import PropertyPredictor

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        graphs = [g for g in pool.map(_graph, records, chunksize=32) if g[1] is not None]
    predictor = PropertyPredictor(device="cpu", folder=folder, precision="float32")
    raw = predictor.predict_graphs([g for _, g in graphs], batch_size=256)
    columns = np.concatenate([raw[name] for name in OUTPUT_LAYOUT], axis=1)
    order = [t for names in OUTPUT_LAYOUT.values() for t in names]
    columns = columns[:, [order.index(t) for t in TARGETS]]
    return {key: columns[k] for k, (key, _) in enumerate(graphs)}


def _as_reported_gap(predicted: np.ndarray, labels: np.ndarray) -> float:
    k = TARGETS.index("band_gap")
    ok = np.isfinite(labels[:, k])
    gap = np.clip(predicted[ok, k], 0, None)
    return float(np.abs(np.where(gap < METALLIC_GAP_THRESHOLD_EV, 0.0, gap) - labels[ok, k]).mean())


def compare_with_cgcnn(folder: Path | None = None) -> dict:
    """Validation MAEs of the shipped PointNet and CGCNN models on the same crystals.

    Returns
    -------
    dict
        ``{"targets": {target: {"units", "count", "pointnet", "cgcnn", "seed_pointnet"}},
        "band_gap_as_reported": {...}, "validation_crystals": n}``.
    """
    from app.engine.training.recipes import RECIPES

    from app.engine.training.feature_cache import featurise_points, validation_records

    records = validation_records(DATASETS)
    dataset = featurise_points(records)  # point clouds by the runtime featuriser
    _, val_rows = split_rows(dataset)
    keys = [(str(s), str(i)) for s, i in zip(dataset.sources[val_rows], dataset.ids[val_rows])]
    cgcnn = cgcnn_predictions(records, folder)
    both = np.array([key in cgcnn for key in keys])
    rows = val_rows[both]
    pointnet = predict_rows(load_shipped(folder), dataset, rows)
    reference = np.stack([cgcnn[key] for key, ok in zip(keys, both) if ok])
    labels = labels_of(dataset, rows)
    mae_pointnet = mean_absolute_errors(pointnet, labels, TARGETS)
    mae_cgcnn = mean_absolute_errors(reference, labels, TARGETS)
    report = {"validation_crystals": int(len(rows)), "targets": {}}
    for k, target in enumerate(TARGETS):
        report["targets"][target] = {
            "units": RECIPES[TARGET_RECIPES[target]].units[target],
            "count": int(np.isfinite(labels[:, k]).sum()),
            "pointnet": mae_pointnet[target],
            "cgcnn": mae_cgcnn[target],
            "seed_pointnet": SEED_POINTNET_MAE.get(target),
        }
    report["band_gap_as_reported"] = {"pointnet": _as_reported_gap(pointnet, labels),
                                      "cgcnn": _as_reported_gap(reference, labels)}
    return report


def format_comparison(report: dict) -> str:
    """The comparison as a plain-text table (MAE on the validation crystals)."""
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "–"

    lines = [f"Validation MAE on the same {report['validation_crystals']} held-out crystals",
             f"{'target':28s} {'units':12s} {'n':>5s} {'PointNet':>9s} {'CGCNN':>9s} {'seed PointNet':>14s}"]
    for target, row in report["targets"].items():
        lines.append(f"{target:28s} {row['units']:12s} {row['count']:5d} {cell(row['pointnet']):>9s} "
                     f"{cell(row['cgcnn']):>9s} {cell(row['seed_pointnet']):>14s}")
    gap = report["band_gap_as_reported"]
    lines.append(f"{'band_gap as reported':28s} {'eV':12s} {'':5s} {cell(gap['pointnet']):>9s} {cell(gap['cgcnn']):>9s}")
    return "\n".join(lines) + "\n"
