"""``crystal-designer train ding``: the three DING property predictors and the composition CVAE.

Each network is its own run with a checkpoint after every epoch (rerunning resumes), written
to ``models/`` with a manifest entry and a model card when it finishes. The predictors come
first, the CVAE follows. Before them the summary of known compositions is written (formula
fingerprints for the novelty flag, a Gaussian mixture of the targets): derived numbers, none of
the training rows.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from app.engine.compositions.formula import BLOCK, VOCABULARY, one_hot_counts
from app.engine.compositions.networks import (CVAE_HIDDEN, CVAE_LATENT, PREDICTOR_LAYERS, PROPERTIES, UNITS,
                                              CompositionCVAE, PropertyDNN)
from app.engine.compositions.runtime import (CVAE_NAME, KNOWN_COMPOSITIONS_FILE, KNOWN_NAME, PREDICTOR_NAMES,
                                            KnownCompositions)
from app.engine.core.cancel import CancelToken, ProgressCallback
from app.engine.core.paths import models_dir
from app.engine.core.registry import save_manifest_entry, sha256_of
from app.engine.training import checkpoints
from app.engine.training.ding_data import PLAUSIBLE_RANGES, SOURCE, SPLIT_METHOD, CompositionData, load_composition_data

logger = logging.getLogger(__name__)

PREDICTOR_EPOCHS = 10
CVAE_EPOCHS = 30
BATCH_SIZE = 256
PREDICTOR_LEARNING_RATE = 1e-3
CVAE_LEARNING_RATE = 1e-3
KL_WEIGHT = 1.0
KL_WARMUP_EPOCHS = 10
#: Free bits (Kingma et al. 2016): KL below this many nats per latent dimension is not penalised, so the
#: slow-learning encoder is not pushed into a collapsed posterior before it carries the composition.
FREE_BITS_PER_DIMENSION = 0.25
CVAE_BATCH_SIZE = 128


def _features(data: CompositionData, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(one_hot_counts(data.counts[rows]))


def predictor_mae(model: PropertyDNN, data: CompositionData, rows: np.ndarray, column: int) -> float:
    """MAE (property units) of a predictor on ``rows``."""
    predicted = predict_property(model, data, rows)
    return float(np.abs(predicted - data.targets[rows, column]).mean())


@torch.no_grad()
def predict_property(model: PropertyDNN, data: CompositionData, rows: np.ndarray, batch: int = 2048) -> np.ndarray:
    model.eval()
    return np.concatenate([model.predict(_features(data, rows[i:i + batch])).numpy()
                           for i in range(0, len(rows), batch)]) if len(rows) else np.zeros(0, np.float32)


def _run(name, config, epochs, model, optimizer, scheduler, fresh, epoch_step, score_of, progress, cancel) -> dict:
    """The shared epoch loop: resume, train one epoch, score on validation, checkpoint."""
    state = checkpoints.new_run_state() if fresh else checkpoints.resume(
        name, config, epochs, model, optimizer, scheduler)
    for epoch in range(state["epoch"], epochs):
        began = time.perf_counter()
        rng = np.random.default_rng(epoch)
        train_loss = epoch_step(epoch, rng)
        score, scores = score_of()
        scheduler.step()
        checkpoints.record_epoch(state, epoch + 1, score, model,
                                 {"train_loss": train_loss, **scores, "seconds": time.perf_counter() - began})
        logger.info("%s epoch %d/%d: loss %.4f %s (%.0f s)", name, epoch + 1, epochs, train_loss, scores,
                    state["history"][-1]["seconds"])
        checkpoints.save(name, config, epochs, model, optimizer, scheduler, state)
        if progress is not None:
            progress(epoch + 1, epochs, f"{name} epoch {epoch + 1}")
        if cancel is not None:
            cancel.raise_if_cancelled()
    model.load_state_dict(state["best"]["state"])
    return state


def train_predictor(prop: str, data: CompositionData, epochs: int = PREDICTOR_EPOCHS, fresh: bool = False,
                    output_dir: Path | None = None, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None) -> dict:
    """Train the Table 1 predictor of ``prop`` on the training split; returns its manifest entry."""
    torch.manual_seed(0)
    column = PROPERTIES.index(prop)
    name = PREDICTOR_NAMES[prop]
    train_rows, val_rows = data.train_rows, data.validation_rows
    model = PropertyDNN()
    labels = torch.from_numpy(data.targets[:, column])
    model.target_mean.fill_(float(labels[train_rows].mean()))
    model.target_std.fill_(float(labels[train_rows].std()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=PREDICTOR_LEARNING_RATE, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    def epoch_step(epoch, rng):
        model.train()
        order, total, steps = rng.permutation(train_rows), 0.0, 0
        for start in range(0, len(order), BATCH_SIZE):
            rows = order[start:start + BATCH_SIZE]
            target = (labels[rows] - model.target_mean) / model.target_std
            loss = (model(_features(data, rows)) - target).abs().mean()  # MAE objective, as the paper
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        return total / max(steps, 1)

    def score_of():
        mae = predictor_mae(model, data, val_rows, column)
        return mae, {"validation_mae": mae}

    config = {"prop": prop, "layers": [list(layer) for layer in PREDICTOR_LAYERS], "vocabulary": len(VOCABULARY)}
    state = _run(name, config, epochs, model, optimizer, scheduler, fresh, epoch_step, score_of, progress, cancel)
    from app.engine.training.evaluate_ding import predictor_metrics

    metrics = predictor_metrics(model, data, column)
    return _write_predictor(prop, model, metrics, state, epochs, data, output_dir or models_dir())


def cvae_loss(model: CompositionCVAE, counts: torch.Tensor, conditions: torch.Tensor, kl_weight: float,
              free_bits: float = 0.0):
    """Categorical cross-entropy summed over element blocks + weighted KL divergence (mean per row).

    Returns (loss, cross-entropy, KL); the loss counts each latent dimension's batch-mean KL as at
    least ``free_bits`` nats, the reported KL is the plain one.
    """
    features = functional.one_hot(counts, BLOCK).flatten(1).float()
    logits, mean, log_var = model(features, conditions)
    reconstruction = functional.cross_entropy(logits.transpose(1, 2), counts, reduction="none").sum(1).mean()
    kl_per_dimension = (-0.5 * (1 + log_var - mean.pow(2) - log_var.exp())).mean(0)
    penalised = kl_per_dimension.clamp(min=free_bits).sum()
    return reconstruction + kl_weight * penalised, reconstruction, kl_per_dimension.sum()


def _start_at_marginals(model: CompositionCVAE, counts: torch.Tensor) -> None:
    """Output bias = log frequency of every element count, small output weights: a uniform start
    (cross-entropy 85·ln 11 ≈ 204) sent the first steps into dead units and a long plateau."""
    frequency = functional.one_hot(counts, BLOCK).float().mean(0) + 1e-4
    with torch.no_grad():
        model.decoder[-1].bias.copy_(frequency.log().flatten())
        model.decoder[-1].weight.mul_(0.1)


def train_cvae(data: CompositionData, epochs: int = CVAE_EPOCHS, fresh: bool = False,
               output_dir: Path | None = None, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None) -> dict:
    """Train the Table 2 CVAE on the training split; returns its manifest entry."""
    from app.engine.training.evaluate_ding import reconstruction_accuracy

    torch.manual_seed(0)
    train_rows, val_rows = data.train_rows, data.validation_rows
    model = CompositionCVAE()
    targets = torch.from_numpy(data.targets)
    model.condition_mean.copy_(targets[train_rows].mean(0))
    model.condition_std.copy_(targets[train_rows].std(0))
    counts = torch.from_numpy(data.counts)
    _start_at_marginals(model, counts[train_rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=CVAE_LEARNING_RATE, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    def epoch_step(epoch, rng):
        model.train()
        # From 0 (a plain autoencoder) up to KL_WEIGHT: starting at full weight collapsed the posterior.
        kl_weight = KL_WEIGHT * min(1.0, epoch / KL_WARMUP_EPOCHS)
        order, total, steps = rng.permutation(train_rows), 0.0, 0
        for start in range(0, len(order), CVAE_BATCH_SIZE):
            rows = order[start:start + CVAE_BATCH_SIZE]
            loss, _, _ = cvae_loss(model, counts[rows], targets[rows], kl_weight, FREE_BITS_PER_DIMENSION)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        return total / max(steps, 1)

    def score_of():
        accuracy = reconstruction_accuracy(model, data, val_rows)
        with torch.no_grad():
            model.eval()
            _, reconstruction, kl = cvae_loss(model, counts[val_rows], targets[val_rows], KL_WEIGHT)
        # Select on the validation ELBO: a generator must also sample well, not only reconstruct.
        return float(reconstruction + kl), {"validation_reconstruction_accuracy": accuracy,
                                            "validation_cross_entropy": float(reconstruction),
                                            "validation_kl": float(kl)}

    config = {"hidden": list(CVAE_HIDDEN), "latent": CVAE_LATENT, "kl_weight": KL_WEIGHT,
              "warmup": KL_WARMUP_EPOCHS, "free_bits": FREE_BITS_PER_DIMENSION, "batch": CVAE_BATCH_SIZE,
              "vocabulary": len(VOCABULARY)}
    state = _run(CVAE_NAME, config, epochs, model, optimizer, scheduler, fresh, epoch_step, score_of, progress, cancel)
    metrics = {"validation_reconstruction_accuracy": reconstruction_accuracy(model, data, val_rows),
               "validation_count": int(len(val_rows))}
    return _write_cvae(model, metrics, state, epochs, data, output_dir or models_dir())


def _common_entry(data: CompositionData, epochs: int, state: dict, learning_rate: float,
                  batch_size: int = BATCH_SIZE) -> dict:
    return {
        "data": {"dataset": "compositions/oqmd", "sources": [SOURCE], "preparation": data.report,
                 "plausible_ranges": {k: list(v) for k, v in PLAUSIBLE_RANGES.items()}},
        "split": {"method": SPLIT_METHOD, "train_count": int(len(data.train_rows)),
                  "validation_count": int(len(data.validation_rows))},
        "epochs": epochs, "epochs_completed": state["epoch"], "best_epoch": state["best"]["epoch"],
        "history": [{k: v for k, v in h.items()} for h in state["history"]],
        "created": time.strftime("%Y-%m-%d"),
        "training_settings": {"optimizer": "AdamW + cosine decay", "learning_rate": learning_rate,
                              "batch_size": batch_size},
    }


def _write_predictor(prop, model, metrics, state, epochs, data, output_dir: Path) -> dict:
    from app.engine.training.ding_cards import predictor_card

    name = PREDICTOR_NAMES[prop]
    output_dir.mkdir(parents=True, exist_ok=True)
    weights = output_dir / f"{name}.pt"
    torch.save(model.state_dict(), weights)
    entry = {"file": weights.name, "sha256": sha256_of(weights), "kind": "ding_predictor",
             "description": f"DING predictor of {prop.replace('_', ' ')} from the composition (Table 1 DNN)",
             "architecture": {"property": prop, "vocabulary": list(VOCABULARY), "max_count": BLOCK - 1,
                              "layers": [list(layer) for layer in PREDICTOR_LAYERS],
                              "target_mean": float(model.target_mean), "target_std": float(model.target_std)},
             "units": {prop: UNITS[prop]}, **_common_entry(data, epochs, state, PREDICTOR_LEARNING_RATE),
             "training": {"loss": "L1 (MAE) on the standardised property"},
             "metrics": metrics, "card": f"{name}.md"}
    save_manifest_entry(name, entry, output_dir)
    (output_dir / f"{name}.md").write_text(predictor_card(name, entry))
    return entry


def _write_cvae(model, metrics, state, epochs, data, output_dir: Path) -> dict:
    from app.engine.training.ding_cards import cvae_card

    output_dir.mkdir(parents=True, exist_ok=True)
    weights = output_dir / f"{CVAE_NAME}.pt"
    torch.save(model.state_dict(), weights)
    entry = {"file": weights.name, "sha256": sha256_of(weights), "kind": "ding_cvae",
             "description": "DING conditional VAE over compositions (Table 2)",
             "architecture": {"vocabulary": list(VOCABULARY), "max_count": BLOCK - 1, "hidden": list(CVAE_HIDDEN),
                              "latent_dim": CVAE_LATENT, "conditions": list(PROPERTIES),
                              "condition_mean": model.condition_mean.tolist(),
                              "condition_std": model.condition_std.tolist()},
             "units": dict(UNITS), **_common_entry(data, epochs, state, CVAE_LEARNING_RATE, CVAE_BATCH_SIZE),
             "training": {"loss": "categorical cross-entropy summed over element blocks + KL "
                                  f"(weight {KL_WEIGHT}, linear warm-up from 0 over {KL_WARMUP_EPOCHS} epochs, free bits "
                                  f"{FREE_BITS_PER_DIMENSION} nats per latent dimension)"},
             "metrics": metrics, "card": f"{CVAE_NAME}.md"}
    save_manifest_entry(CVAE_NAME, entry, output_dir)
    (output_dir / f"{CVAE_NAME}.md").write_text(cvae_card(entry))
    return entry


#: Components of the Gaussian mixture fitted to the three training targets.
MIXTURE_COMPONENTS = 16
MIXTURE_ITERATIONS = 200


def fit_gaussian_mixture(values: np.ndarray, components: int = MIXTURE_COMPONENTS,
                         iterations: int = MIXTURE_ITERATIONS, seed: int = 0) -> dict:
    """Full-covariance Gaussian mixture of ``values`` ``(n, d)`` by expectation-maximisation.

    Fitted on standardised values (k-means++-style seeding) and returned in the original units:
    ``{"weights": (k,), "means": (k, d), "covariances": (k, d, d), "log_likelihood": mean per row}``.
    """
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    values = np.asarray(values, dtype=np.float64)
    centre, scale = values.mean(0), values.std(0) + 1e-12
    x = (values - centre) / scale
    n, d = x.shape
    components = max(1, min(components, n))
    rng = np.random.default_rng(seed)
    means = [x[rng.integers(n)]]
    for _ in range(1, components):
        distance = np.min([((x - m) ** 2).sum(1) for m in means], axis=0)
        means.append(x[rng.choice(n, p=distance / distance.sum())] if distance.sum() > 0 else x[rng.integers(n)])
    means = np.array(means)
    covariances = np.stack([np.eye(d)] * components)
    weights = np.full(components, 1.0 / components)
    regulariser = 1e-4 * np.eye(d)
    previous = -np.inf
    for _ in range(iterations):
        log_density = np.stack([multivariate_normal.logpdf(x, means[k], covariances[k], allow_singular=True)
                                for k in range(components)], axis=1).reshape(n, components) + np.log(weights)
        total = logsumexp(log_density, axis=1)
        responsibility = np.exp(log_density - total[:, None])
        mass = responsibility.sum(0) + 1e-12
        weights = mass / n
        means = (responsibility.T @ x) / mass[:, None]
        for k in range(components):
            centred = x - means[k]
            covariances[k] = (responsibility[:, k, None] * centred).T @ centred / mass[k] + regulariser
        likelihood = float(total.mean())
        if likelihood - previous < 1e-6:
            break
        previous = likelihood
    return {"weights": weights, "means": means * scale + centre,
            "covariances": covariances * np.outer(scale, scale), "log_likelihood": likelihood}


def write_known_compositions(data: CompositionData, output_dir: Path | None = None) -> dict:
    """``models/ding_known_compositions.npz``: derived from the data, none of the data itself.

    Fingerprints (:func:`formula_hash`) of every composition (train and validation: all count as
    known for the novelty flag) and a Gaussian mixture of the three training-split targets (for
    targets the user leaves unset).
    """
    output_dir = output_dir or models_dir()
    output_dir.mkdir(parents=True, exist_ok=True)
    train = data.targets[data.train_rows].astype(np.float64)
    mixture = fit_gaussian_mixture(train)
    known = KnownCompositions.from_formulas([str(f) for f in data.formulas], weights=mixture["weights"],
                                            means=mixture["means"], covariances=mixture["covariances"],
                                            low=train.min(0), high=train.max(0))
    path = output_dir / KNOWN_COMPOSITIONS_FILE
    known.save(path)
    entry = {"file": path.name, "sha256": sha256_of(path), "kind": "composition_summary",
             "description": "Fingerprints of the DING training compositions (novelty flag) and a Gaussian mixture "
                            "of their three targets (conditions for unset targets); no formulas or labels",
             "data": {"dataset": "compositions/oqmd", "sources": [SOURCE], "preparation": data.report},
             "split": {"method": SPLIT_METHOD, "train_count": int(len(data.train_rows)),
                       "validation_count": int(len(data.validation_rows))},
             "contents": {"formula_hashes": int(len(known)),
                          "hash": "first 8 bytes of sha256(normalised formula), little-endian uint64",
                          "mixture_components": int(len(mixture["weights"])),
                          "mixture_fitted_on": "training split targets (EM, full covariance)",
                          "mixture_mean_log_likelihood": round(mixture["log_likelihood"], 4)},
             "units": dict(UNITS), "created": time.strftime("%Y-%m-%d"), "card": f"{KNOWN_NAME}.md"}
    save_manifest_entry(KNOWN_NAME, entry, output_dir)
    return entry


def train_ding(epochs: int | None = None, fresh: bool = False, output_dir: Path | None = None,
               progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> dict:
    """Train all DING models (predictors, then the CVAE) and write the composition list.

    ``epochs`` overrides both epoch counts. Returns the metrics of every model by name.
    """
    data = load_composition_data()
    write_known_compositions(data, output_dir)
    metrics = {}
    for prop in PROPERTIES:
        entry = train_predictor(prop, data, epochs or PREDICTOR_EPOCHS, fresh, output_dir, progress, cancel)
        metrics[PREDICTOR_NAMES[prop]] = entry["metrics"]
    entry = train_cvae(data, epochs or CVAE_EPOCHS, fresh, output_dir, progress, cancel)
    metrics[CVAE_NAME] = entry["metrics"]
    return metrics


def ship_checkpoint(name: str, output_dir: Path | None = None) -> dict:
    """Write the best epoch so far of an unfinished run ``name`` as the shipped model.

    For a run stopped before its planned epochs (a deadline, a shared machine): the manifest entry
    and card then say how many of the planned epochs were completed.
    """
    saved = torch.load(checkpoints.checkpoint_path(name), map_location="cpu", weights_only=False)
    state, epochs = saved["state"], saved["epochs"]
    data = load_composition_data()
    output_dir = output_dir or models_dir()
    if name == CVAE_NAME:
        from app.engine.training.evaluate_ding import reconstruction_accuracy

        model = CompositionCVAE()
        model.load_state_dict(state["best"]["state"])
        metrics = {"validation_reconstruction_accuracy": reconstruction_accuracy(model, data, data.validation_rows),
                   "validation_count": int(len(data.validation_rows))}
        return _write_cvae(model, metrics, state, epochs, data, output_dir)
    from app.engine.training.evaluate_ding import predictor_metrics

    prop = next(p for p, n in PREDICTOR_NAMES.items() if n == name)
    model = PropertyDNN()
    model.load_state_dict(state["best"]["state"])
    metrics = predictor_metrics(model, data, PROPERTIES.index(prop))
    return _write_predictor(prop, model, metrics, state, epochs, data, output_dir)
