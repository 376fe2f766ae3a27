"""Training and evaluation of the property models (CGCNN) on the shared DFT data.

One recipe per shipped model. ``train(name)`` featurises (or loads the cached graphs),
splits by material-id hash (10 % validation), trains with checkpoints after every epoch
(rerunning resumes), keeps the epoch with the best validation MAE, and writes the weights,
the manifest entry and the model card into ``models/``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from app.engine.core.cancel import CancelToken, ProgressCallback
from app.engine.properties.cgcnn import CGCNN, CGCNNConfig, batch_to_tensors
from app.engine.properties.graph import GraphBatch
from app.engine.core.paths import models_dir
from app.engine.core.property_table import METALLIC_GAP_THRESHOLD_EV
from app.engine.training.loop import fit_epochs
from app.engine.core.registry import load_model, load_state_dict, save_manifest_entry, sha256_of
from app.engine.training.feature_cache import GraphDataset, featurise_graphs, load_dataset, validation_records
from app.engine.training.datasets import is_validation
from app.engine.training.parity import parity_sample, record_parity_sample
from app.engine.training.recipes import RECIPES, Recipe

logger = logging.getLogger(__name__)


def make_batch(dataset: GraphDataset, indices: np.ndarray) -> GraphBatch:
    """Collate the crystals ``indices`` of a cached data set into one batch (vectorised)."""
    starts = dataset.atom_offsets[indices]
    sizes = dataset.atom_offsets[indices + 1] - starts
    new_offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    crystal_index = np.repeat(np.arange(len(indices)), sizes)
    atom_rows = np.arange(sizes.sum()) - np.repeat(new_offsets, sizes) + np.repeat(starts, sizes)
    shift = np.repeat(new_offsets, sizes)[:, None]
    return GraphBatch(
        atomic_numbers=dataset.atomic_numbers[atom_rows].astype(np.int64),
        neighbor_index=dataset.neighbor_index[atom_rows].astype(np.int64) + shift,
        neighbor_distance=dataset.neighbor_distance[atom_rows],
        neighbor_mask=dataset.neighbor_mask[atom_rows],
        crystal_index=crystal_index,
        n_crystals=len(indices),
    )


def split_indices(dataset: GraphDataset, targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation rows having at least one of ``targets`` labelled."""
    labelled = np.isfinite(np.stack([dataset.label(t) for t in targets], axis=1)).any(axis=1)
    validation = np.array([is_validation(str(i)) for i in dataset.ids])
    return np.flatnonzero(labelled & ~validation), np.flatnonzero(labelled & validation)


def _labels(dataset: GraphDataset, targets: list[str], indices: np.ndarray) -> np.ndarray:
    return np.stack([dataset.label(t)[indices] for t in targets], axis=1)


@torch.no_grad()
def predict_rows(model: CGCNN, dataset: GraphDataset, indices: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Physical-unit predictions for rows ``indices``, shape ``(len(indices), n_targets)``."""
    model.eval()
    out = []
    for start in range(0, len(indices), batch_size):
        batch = batch_to_tensors(make_batch(dataset, indices[start : start + batch_size]))
        out.append(model.predict(batch).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.config.targets)))


def mean_absolute_errors(predicted: np.ndarray, labels: np.ndarray, targets: list[str]) -> dict[str, float]:
    """MAE per target over the labelled rows."""
    out = {}
    for k, target in enumerate(targets):
        ok = np.isfinite(labels[:, k])
        out[target] = float(np.abs(predicted[ok, k] - labels[ok, k]).mean()) if ok.any() else math.nan
    return out


def train(
    name: str,
    epochs: int | None = None,
    output_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    fresh: bool = False,
) -> dict:
    """Train recipe ``name`` and write its weights, manifest entry and card.

    Parameters
    ----------
    name : str
        Key of ``RECIPES``.
    epochs : int, optional
        Overrides the recipe's epoch count.
    output_dir : Path, optional
        Where weights, manifest and card go (default: the shipped ``models/`` folder).
    fresh : bool
        Ignore an existing checkpoint instead of resuming from it.

    Returns
    -------
    dict
        The manifest entry written.
    """
    recipe = RECIPES[name]
    epochs = epochs or recipe.epochs
    output_dir = output_dir or models_dir()
    torch.manual_seed(0)

    dataset = load_dataset(recipe.dataset)
    train_rows, val_rows = split_indices(dataset, recipe.targets)
    train_labels = _labels(dataset, recipe.targets, train_rows)
    val_labels = _labels(dataset, recipe.targets, val_rows)
    logger.info("%s: %d train / %d validation crystals", name, len(train_rows), len(val_rows))

    config = CGCNNConfig(targets=list(recipe.targets), **recipe.architecture)
    model = CGCNN(config)
    if recipe.init_from:
        source_weights, _ = load_state_dict(recipe.init_from, output_dir)
        transferable = {
            k: v for k, v in source_weights.items() if k.startswith(("embedding.", "convolutions."))
        }
        model.load_state_dict(transferable, strict=False)
        logger.info("%s: initialised %d tensors from %s", name, len(transferable), recipe.init_from)
    model.target_mean.copy_(torch.tensor(np.nanmean(train_labels, axis=0), dtype=torch.float32))
    model.target_std.copy_(torch.tensor(np.nanstd(train_labels, axis=0), dtype=torch.float32))

    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(train_rows) / recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.learning_rate, total_steps=epochs * steps_per_epoch, pct_start=0.1
    )
    target_scale = model.target_std.numpy()

    def step(rows, _rng):
        batch = batch_to_tensors(make_batch(dataset, rows))
        labels = torch.from_numpy(_labels(dataset, recipe.targets, rows))
        standardised = (labels - model.target_mean) / model.target_std
        known = torch.isfinite(standardised)
        loss = (model(batch) - torch.nan_to_num(standardised)).abs()[known].mean()
        return loss, {"train_loss": loss.item()}

    def evaluate_epoch():
        val_mae = mean_absolute_errors(predict_rows(model, dataset, val_rows), val_labels, recipe.targets)
        # Model selection on the mean standardised validation MAE over targets.
        return float(np.nanmean([val_mae[t] / s for t, s in zip(recipe.targets, target_scale)])), {"val_mae": val_mae}

    state = fit_epochs(name, config.to_dict(), epochs, model, optimizer, scheduler, train_rows, recipe.batch_size,
                       step, evaluate_epoch, fresh=fresh, cancel=cancel, progress=progress)
    metrics = evaluate_model(model, dataset, val_rows, recipe)
    return _write_model(name, recipe, model, metrics, state["best"]["epoch"], epochs, len(train_rows), len(val_rows),
                        state["history"], output_dir)


def evaluate_model(model: CGCNN, dataset: GraphDataset, rows: np.ndarray, recipe: Recipe) -> dict:
    """Validation metrics: MAE per target overall and per source set, plus derived quantities."""
    labels = _labels(dataset, recipe.targets, rows)
    predicted = predict_rows(model, dataset, rows)
    metrics: dict = {"validation_mae": mean_absolute_errors(predicted, labels, recipe.targets)}
    sources = dataset.sources[rows]
    metrics["validation_mae_by_source"] = {
        str(source): mean_absolute_errors(predicted[sources == source], labels[sources == source], recipe.targets)
        for source in np.unique(sources)
    }
    metrics["validation_count"] = int(len(rows))
    # Seeded ≤ 500 (true, predicted) pairs per target for the window's parity plots.
    metrics["parity_sample"] = parity_sample(labels, predicted, recipe.targets)
    if "band_gap" in recipe.targets:
        k = recipe.targets.index("band_gap")
        gap = np.clip(predicted[:, k], 0, None)
        metrics["validation_mae"]["band_gap_clipped_at_0"] = float(np.abs(gap - labels[:, k]).mean())
        # As the app reports it: below the metallic threshold the gap is 0 (and n, ε∞ undefined).
        reported = np.where(gap < METALLIC_GAP_THRESHOLD_EV, 0.0, gap)
        metrics["validation_mae"]["band_gap_as_reported"] = float(np.abs(reported - labels[:, k]).mean())
        metrics["metal_classification_accuracy"] = float(((reported == 0) == (labels[:, k] == 0)).mean())
    if "refractive_index" in recipe.targets and "log10_dielectric_constant" in dataset.label_names:
        k = recipe.targets.index("refractive_index")
        true_log_eps = dataset.label("log10_dielectric_constant")[rows]
        ok = np.isfinite(true_log_eps)
        predicted_log_eps = 2 * np.log10(np.clip(predicted[ok, k], 1.0, None))
        metrics["validation_mae"]["log10_dielectric_constant_as_n_squared"] = float(
            np.abs(predicted_log_eps - true_log_eps[ok]).mean()
        )
        metrics["validation_count_dielectric"] = int(ok.sum())
    return metrics


def _write_model(name, recipe, model, metrics, best_epoch, epochs, n_train, n_val, history, output_dir: Path) -> dict:
    output_dir.mkdir(parents=True, exist_ok=True)
    weights = output_dir / f"{name}.pt"
    torch.save(model.state_dict(), weights)
    entry = {
        "file": weights.name,
        "sha256": sha256_of(weights),
        "kind": "cgcnn",
        "description": recipe.description,
        "architecture": model.config.to_dict(),
        "units": recipe.units,
        "data": {"dataset": recipe.dataset, "sources": recipe.sources},
        "split": {
            "method": "sha256(material_id) mod 100 < 10 -> validation",
            "train_count": n_train,
            "validation_count": n_val,
        },
        "epochs": epochs,
        "best_epoch": best_epoch,
        "training": {
            "loss": "L1 on standardised targets",
            "optimizer": "AdamW + OneCycle",
            "learning_rate": recipe.learning_rate,
            "batch_size": recipe.batch_size,
            "init_from": recipe.init_from,
        },
        "metrics": metrics,
        "card": f"{name}.md",
        "created": time.strftime("%Y-%m-%d"),
    }
    save_manifest_entry(name, entry, output_dir)
    (output_dir / f"{name}.md").write_text(_model_card(name, recipe, entry, history))
    return entry


def _model_card(name: str, recipe: Recipe, entry: dict, history: list[dict]) -> str:
    arch = entry["architecture"]
    rows = "\n".join(
        f"| {target} | {recipe.units.get(target, '')} | {mae:.4f} |"
        for target, mae in entry["metrics"]["validation_mae"].items()
    )
    by_source = "\n".join(
        f"- {source}: " + ", ".join(f"{t} {v:.4f}" for t, v in maes.items())
        for source, maes in entry["metrics"]["validation_mae_by_source"].items()
    )
    sources = "\n".join(f"- {s}" for s in recipe.sources)
    return f"""# Model card: {name}

{recipe.description}

## Model
CGCNN (Xie & Grossman, PRL 2018) implemented in this project: {arch['n_conv']} gated
convolutions of width {arch['atom_dim']}, neighbours within {arch['cutoff']} Å (≤ 12 per atom,
Gaussian expansion step {arch['gaussian_step']} Å), mean pooling, {arch['n_hidden']} hidden layer(s)
of width {arch['hidden_dim']}. Weights: `{entry['file']}` (sha256 `{entry['sha256']}`).
{"Convolutions initialised from `" + recipe.init_from + "` (transfer learning as in ICSG3D)." if recipe.init_from else ""}

## Data
{sources}

Split: {entry['split']['method']}; {entry['split']['train_count']} training and
{entry['split']['validation_count']} validation crystals. Epochs: {entry['epochs']} (best
validation epoch {entry['best_epoch']}), batch {recipe.batch_size}, AdamW + one-cycle
learning rate (peak {recipe.learning_rate}), L1 loss on standardised targets.

## Validation metrics (crystals not used for training)
| target | units | MAE |
|---|---|---|
{rows}

By source set:
{by_source}

Reproduce: `crystal-designer train {name}` (trains and rewrites this card),
`crystal-designer evaluate {name}` (recomputes these metrics from the shipped weights).

## Limits
Trained on DFT (PBE) labels of ordered inorganic crystals (known and hypothetical); its
errors grow for chemistries and structure types far from the Materials Project. Predictions are
estimates for screening, not a substitute for a calculation.
"""


def evaluate(name: str, folder: Path | None = None, record: bool = False, workers: int = 1) -> dict:
    """Recompute validation metrics of the shipped model ``name`` from its weights.

    Parameters
    ----------
    name : str
        Key of ``RECIPES``.
    folder : Path, optional
        Models folder (default: the shipped one).
    record : bool
        Store the parity sample (``metrics.parity_sample``) in the model's manifest entry; the other
        metrics stay as training wrote them (they come out the same from the same weights).
    workers : int
        Processes that build the validation crystals' graphs.
    """
    recipe = RECIPES[name]
    model, _ = load_model(name, folder)
    # Only the validation crystals are featurised (a tenth of the set; no training cache needed),
    # by the runtime graph builder, so the figures describe what the app computes today.
    dataset = featurise_graphs(validation_records([recipe.dataset]), workers=workers)
    _, val_rows = split_indices(dataset, recipe.targets)
    metrics = evaluate_model(model, dataset, val_rows, recipe)
    if record:
        record_parity_sample(name, metrics["parity_sample"], f"crystal-designer evaluate {name} --record", folder)
    return metrics
