"""Training and evaluation of the PointNet property model on the shared DFT data.

One multi-task PointNet predicts all six targets of the four CGCNN recipes (formation energy,
band gap, log10 K, log10 G, Poisson ratio, refractive index). The seed proposes multi-task
learning as its own next step, and one shared trunk lets the small elastic and optical sets
borrow the features learnt from the 33k Materials Project crystals (what the CGCNN models get
from ``init_from``), at the cost of one training run and one forward pass at prediction time.

Rows are the union of the three training sets; train/validation is the CGCNN split
(sha256 of the material id), so every validation row is also a CGCNN validation row.
Training runs on the shared loop (:func:`app.engine.training.loop.fit_epochs`): random
mini-batches, each run as chunks of similar crystal sizes (little padding); every cloud is
rotated by a fresh uniformly random rotation each time it is seen; a checkpoint after every epoch
(rerunning resumes) and the epoch with the best mean standardised validation MAE is kept.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from app.engine.core.cancel import CancelToken, ProgressCallback
from app.engine.core.paths import models_dir
from app.engine.core.registry import save_manifest_entry, sha256_of
from app.engine.properties.point_cloud import FULL_POINT_FEATURE_LENGTH
from app.engine.properties.pointnet import (PointNet, PointNetConfig, batch_to_tensors,
                                            feature_transform_penalty)
from app.engine.training import checkpoints
from app.engine.training.datasets import is_validation
from app.engine.training.feature_cache import PointDataset, concatenate, load_point_dataset
from app.engine.training.loop import fit_epochs
from app.engine.training.recipes import RECIPES
from app.engine.training.train_property import mean_absolute_errors

logger = logging.getLogger(__name__)

NAME = "pointnet"
#: Which CGCNN recipe covers each PointNet target (for units, sources and the side-by-side evaluation).
TARGET_RECIPES = {
    "formation_energy_per_atom": "formation_energy",
    "band_gap": "band_gap",
    "log10_bulk_modulus": "elastic",
    "log10_shear_modulus": "elastic",
    "poisson_ratio": "elastic",
    "refractive_index": "optical",
}
TARGETS = list(TARGET_RECIPES)
DATASETS = ("mp_eform_gap", "elastic", "optical")
EPOCHS = 28
#: Widths sized so an epoch over the 38k training crystals takes ~1 min on one free core (~3 min on the shared machine).
ARCHITECTURE = {"input_widths": [64, 64], "output_widths": [128, 256], "tnet_widths": [64, 128],
                "head_widths": [256, 128], "pooling": "max+mean", "point_features": FULL_POINT_FEATURE_LENGTH}
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4
#: Weight of PointNet's feature-transform orthogonality regulariser (Qi et al. use 0.001).
TRANSFORM_PENALTY = 1e-3


def load_union() -> PointDataset:
    """The three training sets as one point-cloud data set."""
    return concatenate([load_point_dataset(name) for name in DATASETS])


def split_rows(dataset: PointDataset, targets: list[str] = TARGETS) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation rows with at least one of ``targets`` labelled (CGCNN's id-hash split)."""
    labelled = np.isfinite(np.stack([dataset.label(t) for t in targets], axis=1)).any(axis=1)
    validation = np.array([is_validation(str(i)) for i in dataset.ids])
    return np.flatnonzero(labelled & ~validation), np.flatnonzero(labelled & validation)


def labels_of(dataset: PointDataset, rows: np.ndarray, targets: list[str] = TARGETS) -> np.ndarray:
    return np.stack([dataset.label(t)[rows] for t in targets], axis=1)


def size_sorted_chunks(dataset: PointDataset, rows: np.ndarray, chunk: int = 16) -> list[np.ndarray]:
    """``rows`` sorted by crystal size and cut into chunks of ``chunk`` rows.

    A batch is padded to its largest crystal; running a random mini-batch as a few chunks of
    similar sizes keeps that padding small without changing which rows make up the batch.
    """
    ordered = rows[np.argsort(dataset.sizes[rows], kind="stable")]
    return [ordered[i : i + chunk] for i in range(0, len(ordered), chunk)]


def random_rotations(n: int, rng) -> np.ndarray:
    """``n`` uniformly random rotation matrices, shape ``(n, 3, 3)``."""
    from scipy.spatial.transform import Rotation

    return Rotation.random(n, random_state=rng).as_matrix().astype(np.float32)


@torch.no_grad()
def predict_rows(model: PointNet, dataset: PointDataset, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Physical-unit predictions of rows ``rows`` (standard orientation), shape ``(len(rows), n_targets)``."""
    model.eval()
    order = rows[np.argsort(dataset.sizes[rows], kind="stable")]
    out = np.zeros((len(rows), len(model.config.targets)), dtype=np.float32)
    position = {row: k for k, row in enumerate(rows)}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        predicted = model.predict(batch_to_tensors(dataset.batch(chunk))).numpy()
        out[[position[r] for r in chunk]] = predicted
    return out


def _loss(model: PointNet, dataset: PointDataset, rows: np.ndarray, rng) -> torch.Tensor:
    """Mini-batch loss: L1 on standardised targets, each target present in the batch weighing the same
    however few of its rows the batch holds, plus the feature-transform regulariser."""
    n_targets = len(model.config.targets)
    error_sum, counts, penalty = torch.zeros(n_targets), torch.zeros(n_targets), torch.zeros(())
    for chunk in size_sorted_chunks(dataset, rows):
        batch = batch_to_tensors(dataset.batch(chunk, random_rotations(len(chunk), rng)))
        labels = torch.from_numpy(labels_of(dataset, chunk))
        standardised = (labels - model.target_mean) / model.target_std
        known = torch.isfinite(standardised)
        error = (model.forward_batch(batch) - torch.nan_to_num(standardised)).abs() * known
        error_sum = error_sum + error.sum(dim=0)
        counts = counts + known.sum(dim=0)
        penalty = penalty + feature_transform_penalty(model.last_feature_transform) * len(chunk)
    present = counts > 0
    return (error_sum[present] / counts[present]).mean() + TRANSFORM_PENALTY * penalty / len(rows)


def _score(val_mae: dict[str, float], scale: np.ndarray) -> float:
    return float(np.nanmean([val_mae[t] / s for t, s in zip(TARGETS, scale)]))


def train(
    epochs: int | None = None,
    output_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    fresh: bool = False,
    continue_shipped: bool = False,
    learning_rate: float | None = None,
) -> dict:
    """Train the multi-task PointNet and write its weights, manifest entry and card.

    Parameters
    ----------
    epochs : int, optional
        Overrides ``EPOCHS``.
    output_dir : Path, optional
        Where weights, manifest and card go (default: the shipped ``models/``).
    fresh : bool
        Ignore an existing checkpoint instead of resuming from it.
    continue_shipped : bool
        Start from the shipped weights with a new learning-rate cycle (a second training stage).
    learning_rate : float, optional
        Peak learning rate (default ``LEARNING_RATE``).

    Returns
    -------
    dict
        The manifest entry written.
    """
    epochs = epochs or EPOCHS
    learning_rate = learning_rate or LEARNING_RATE
    output_dir = output_dir or models_dir()
    torch.manual_seed(0)
    dataset = load_union()
    train_rows, val_rows = split_rows(dataset)
    logger.info("pointnet: %d train / %d validation crystals", len(train_rows), len(val_rows))
    if continue_shipped:
        model, previous = load_shipped(output_dir, with_entry=True)
        model = with_point_features(model, ARCHITECTURE.get("point_features", model.config.point_features))
        stages = previous["training"].get("stages") or [{
            "epochs": previous["epochs"], "learning_rate": previous["training"]["learning_rate"],
            "epochs_completed": previous.get("epochs_completed", previous["epochs"]),
            "best_epoch": previous["best_epoch"], "seconds": previous["training"].get("seconds", 0)}]
    else:
        model, stages = PointNet(PointNetConfig(targets=list(TARGETS), **ARCHITECTURE)), []
        train_labels = labels_of(dataset, train_rows)
        model.target_mean.copy_(torch.tensor(np.nanmean(train_labels, axis=0), dtype=torch.float32))
        model.target_std.copy_(torch.tensor(np.nanstd(train_labels, axis=0), dtype=torch.float32))
    run = f"{NAME}_continue" if continue_shipped else NAME
    run_key = {**model.config.to_dict(), "learning_rate": learning_rate, "continued": continue_shipped}
    state = _fit(model, dataset, train_rows, val_rows, epochs, learning_rate, run, run_key, fresh, progress, cancel)
    model.load_state_dict(state["best"]["state"])
    metrics = evaluate_model(model, dataset, val_rows)
    from app.engine.training.feature_cache import POINT_CACHE_VERSION

    metrics["trained_on_point_cloud_version"] = POINT_CACHE_VERSION
    stages = stages + [_stage(epochs, learning_rate, state)]
    return _write_model(model, metrics, state, epochs, len(train_rows), len(val_rows), output_dir, stages)


def with_point_features(model: PointNet, point_features: int) -> PointNet:
    """``model`` reading ``point_features`` per-point columns, computing exactly what it computed before.

    The first per-point layer gets zero weights for the added columns (the environment features),
    so a model trained on the seed's inputs starts a further stage where it stopped and learns how
    much to use the new inputs; every other weight is copied.
    """
    if point_features == model.config.point_features:
        return model
    if point_features < model.config.point_features:
        raise ValueError("A model can only be widened to more per-point columns.")
    config = PointNetConfig(**{**model.config.to_dict(), "point_features": point_features})
    wider = PointNet(config)
    state = model.state_dict()
    key = "input_mlp.0.weight"
    old = state[key]
    added = point_features - model.config.point_features
    # Columns: x, y, z, the old per-point features, [radial], then nothing: insert the new ones
    # right after the old per-point features, where ``forward`` puts them.
    split = model.config.point_features
    state[key] = torch.cat([old[:, :split], old.new_zeros(old.shape[0], added), old[:, split:]], dim=1)
    wider.load_state_dict(state)
    return wider


def _stage(epochs: int, learning_rate: float, state: dict | None = None) -> dict:
    stage = {"epochs": epochs, "learning_rate": learning_rate}
    if state is not None:
        stage.update(epochs_completed=state["epoch"], best_epoch=state["best"]["epoch"],
                     seconds=round(sum(h.get("seconds", 0.0) for h in state["history"])))
    return stage


def _fit(model, dataset, train_rows, val_rows, epochs, learning_rate, run, run_key, fresh, progress, cancel) -> dict:
    """Train ``model`` for ``epochs`` on the shared loop (one-cycle schedule, checkpoint ``run`` every epoch)."""
    val_labels = labels_of(dataset, val_rows)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = math.ceil(len(train_rows) / BATCH_SIZE)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=epochs * steps_per_epoch + 1, pct_start=0.1)
    scale = model.target_std.numpy()

    def step(rows, rng):
        loss = _loss(model, dataset, rows, rng)
        return loss, {"train_loss": loss.item()}

    def evaluate():
        val_mae = mean_absolute_errors(predict_rows(model, dataset, val_rows), val_labels, TARGETS)
        logger.info("%s validation MAE %s", run, json.dumps({k: round(v, 4) for k, v in val_mae.items()}))
        return _score(val_mae, scale), {"val_mae": val_mae}

    return fit_epochs(run, run_key, epochs, model, optimizer, scheduler, train_rows, BATCH_SIZE, step, evaluate,
                      seed=1000, fresh=fresh, cancel=cancel, progress=progress)


def evaluate_model(model: PointNet, dataset: PointDataset, rows: np.ndarray) -> dict:
    """Validation metrics per target, per source set, and the band-gap and ε∞ rules of the CGCNN cards."""
    predicted = predict_rows(model, dataset, rows)
    labels = labels_of(dataset, rows)
    metrics: dict = {"validation_mae": mean_absolute_errors(predicted, labels, TARGETS)}
    sources = dataset.sources[rows]
    metrics["validation_mae_by_source"] = {
        str(s): {t: v for t, v in mean_absolute_errors(predicted[sources == s], labels[sources == s], TARGETS).items()
                 if math.isfinite(v)}
        for s in np.unique(sources)
    }
    metrics["validation_count"] = {t: int(np.isfinite(labels[:, k]).sum()) for k, t in enumerate(TARGETS)}
    metrics.update(derived_metrics(predicted, labels, dataset, rows))
    return metrics


def derived_metrics(predicted: np.ndarray, labels: np.ndarray, dataset: PointDataset, rows: np.ndarray) -> dict:
    """Band gap as reported (metallic threshold), metal classification, ε∞ = n² — as the CGCNN cards."""
    from app.engine.core.property_table import METALLIC_GAP_THRESHOLD_EV

    out: dict = {}
    k = TARGETS.index("band_gap")
    ok = np.isfinite(labels[:, k])
    gap = np.clip(predicted[ok, k], 0, None)
    reported = np.where(gap < METALLIC_GAP_THRESHOLD_EV, 0.0, gap)
    out["band_gap_clipped_at_0"] = float(np.abs(gap - labels[ok, k]).mean())
    out["band_gap_as_reported"] = float(np.abs(reported - labels[ok, k]).mean())
    out["metal_classification_accuracy"] = float(((reported == 0) == (labels[ok, k] == 0)).mean())
    n = TARGETS.index("refractive_index")
    true_log_eps = dataset.label("log10_dielectric_constant")[rows]
    ok = np.isfinite(true_log_eps)
    out["log10_dielectric_constant_as_n_squared"] = float(
        np.abs(2 * np.log10(np.clip(predicted[ok, n], 1.0, None)) - true_log_eps[ok]).mean())
    return {"derived": out}


def _write_model(model, metrics, state, epochs, n_train, n_val, output_dir: Path, stages: list[dict]) -> dict:
    output_dir.mkdir(parents=True, exist_ok=True)
    weights = output_dir / f"{NAME}.pt"
    torch.save(model.state_dict(), weights)
    units = {t: RECIPES[r].units[t] for t, r in TARGET_RECIPES.items()}
    sources = sorted({s for r in set(TARGET_RECIPES.values()) for s in RECIPES[r].sources})
    entry = {
        "file": weights.name,
        "sha256": sha256_of(weights),
        "kind": "pointnet",
        "description": "Multi-task PointNet on the crystal's point cloud: the six targets of the CGCNN models.",
        "architecture": model.config.to_dict(),
        "units": units,
        "data": {"datasets": list(DATASETS), "sources": sources},
        "split": {"method": "sha256(material_id) mod 100 < 10 -> validation (as the CGCNN models)",
                  "train_count": n_train, "validation_count": n_val},
        "epochs": sum(st["epochs"] for st in stages),
        "epochs_completed": sum(st.get("epochs_completed", st["epochs"]) for st in stages),
        "best_epoch": state["best"]["epoch"],
        "training": {"loss": "L1 on standardised targets, mean over the targets present in a batch "
                             f"+ {TRANSFORM_PENALTY} x feature-transform orthogonality",
                     "optimizer": "AdamW + OneCycle per stage", "learning_rate": stages[-1]["learning_rate"],
                     "weight_decay": WEIGHT_DECAY, "batch_size": BATCH_SIZE,
                     "augmentation": "uniformly random rotation of every cloud, every epoch",
                     "stages": stages, "seconds": sum(st.get("seconds", 0) for st in stages)},
        "metrics": metrics,
        "card": f"{NAME}.md",
        "created": time.strftime("%Y-%m-%d"),
    }
    save_manifest_entry(NAME, entry, output_dir)
    from app.engine.training.pointnet_card import model_card

    (output_dir / f"{NAME}.md").write_text(model_card(entry, state["history"]))
    return entry


def load_shipped(folder: Path | None = None, with_entry: bool = False):
    """The shipped PointNet (verified against the manifest), with its manifest entry if ``with_entry``."""
    import app.engine.properties.pointnet  # noqa: F401  (registers the "pointnet" kind)
    from app.engine.core.registry import load_model

    model, entry = load_model(NAME, folder)
    return (model, entry) if with_entry else model


def evaluate(folder: Path | None = None, with_parity_sample: bool = False) -> dict:
    """Validation metrics of the shipped PointNet, recomputed from its weights on point clouds
    built now from the validation crystals (the runtime featuriser); with ``with_parity_sample``
    also ``parity_sample`` (:func:`app.engine.training.parity.parity_sample`, ≤ 500 pairs per target)."""
    from app.engine.training.feature_cache import validation_point_dataset

    dataset = validation_point_dataset(DATASETS)
    _, val_rows = split_rows(dataset)
    model = load_shipped(folder)
    metrics = evaluate_model(model, dataset, val_rows)
    if with_parity_sample:
        from app.engine.training.parity import parity_sample

        metrics["parity_sample"] = parity_sample(labels_of(dataset, val_rows), predict_rows(model, dataset, val_rows),
                                                 TARGETS)
    return metrics


def record_metrics(folder: Path | None = None) -> dict:
    """Recompute the shipped PointNet's validation metrics with the current point-cloud construction
    and store them, with a parity sample for the window's Models dialog, in its manifest entry and
    card (weights unchanged)."""
    from app.engine.core.registry import load_manifest
    from app.engine.training.feature_cache import POINT_CACHE_VERSION
    from app.engine.training.pointnet_card import model_card

    folder = folder or models_dir()
    metrics = evaluate(folder, with_parity_sample=True)
    entry = dict(load_manifest(folder)[NAME])  # re-read right before writing: the manifest is shared
    previous = entry.get("metrics", {})
    metrics["point_cloud_version"] = POINT_CACHE_VERSION
    metrics["recomputed_by"] = "crystal-designer evaluate pointnet --record"
    metrics["parity_sample_command"] = "crystal-designer evaluate pointnet --record"
    if "trained_on_point_cloud_version" in previous:
        metrics["trained_on_point_cloud_version"] = previous["trained_on_point_cloud_version"]
    entry["metrics"] = metrics
    save_manifest_entry(NAME, entry, folder)
    (folder / f"{NAME}.md").write_text(model_card(entry, []))
    return entry["metrics"]


def ship_checkpoint(output_dir: Path | None = None, continued: bool = False) -> dict:
    """Write the best epoch so far of an unfinished (or interrupted) training run as the shipped model.

    For a run stopped before its planned epochs (a deadline, a shared machine): the manifest entry
    and card then say how many of the planned epochs were completed; rerunning
    ``crystal-designer train pointnet`` afterwards resumes the run from the same checkpoint.
    """
    from app.engine.training.feature_cache import POINT_CACHE_VERSION

    run = f"{NAME}_continue" if continued else NAME
    # Own cache file with Python containers (history, best state): not a shipped weight file.
    saved = torch.load(checkpoints.checkpoint_path(run), map_location="cpu", weights_only=False)
    state, epochs, config = saved["state"], saved["epochs"], dict(saved["config"])
    learning_rate = config.pop("learning_rate")
    config.pop("continued", None)
    model = PointNet(PointNetConfig(**config))
    model.load_state_dict(state["best"]["state"])
    dataset = load_union()
    train_rows, val_rows = split_rows(dataset)
    metrics = evaluate_model(model, dataset, val_rows)
    metrics["trained_on_point_cloud_version"] = POINT_CACHE_VERSION
    output_dir = output_dir or models_dir()
    previous = []
    if continued:  # the stages of the shipped model this run continued from
        from app.engine.core.registry import load_manifest

        previous = load_manifest(output_dir)[NAME]["training"].get("stages") or []
    stages = previous + [_stage(epochs, learning_rate, state)]
    return _write_model(model, metrics, state, epochs, len(train_rows), len(val_rows), output_dir, stages)
