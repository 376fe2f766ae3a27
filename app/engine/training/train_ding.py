"""``crystal-designer train ding``: the three DING property predictors and the composition CVAE.

Each network is its own run with a checkpoint after every epoch (rerunning resumes), written
to ``models/`` with a manifest entry and a model card when it finishes. The predictors come
first, the CVAE follows. Before them the summary of known compositions is written (formula
fingerprints for the novelty flag, a Gaussian mixture of the targets): derived numbers, none of
the training rows.
"""

from __future__ import annotations

import logging
import math
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
from app.engine.training.loop import fit_epochs
from app.engine.training.ding_data import PLAUSIBLE_RANGES, SOURCE, SPLIT_METHOD, CompositionData, load_composition_data

logger = logging.getLogger(__name__)

PREDICTOR_EPOCHS = 40
CVAE_EPOCHS = 24
#: Rows per step: large batches keep the 1024-wide layers' matrix products efficient on a CPU.
BATCH_SIZE = 512
PREDICTOR_LEARNING_RATE = 2e-3
#: Peak learning rate of a second stage from the shipped weights (``continue_shipped``).
PREDICTOR_CONTINUE_LEARNING_RATE = 1e-3
CVAE_LEARNING_RATE = 1e-3
CVAE_BATCH_SIZE = 256
#: Weight of the KL term after the warm-up. With the full ELBO weight (1) the KL term wins before the
#: decoder has learnt to read the latent vector: the posterior collapses to the prior and the decoder
#: falls back on the condition alone (every sample the same few compositions). A weight below 1
#: (a beta-VAE) keeps the composition in the latent code.
KL_WEIGHT = 0.05
#: Epochs over which the KL weight rises linearly from 0 (a plain autoencoder) to ``KL_WEIGHT``.
KL_WARMUP_EPOCHS = 5
WEIGHT_DECAY = 1e-5


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


def initialise_relu_layers(model: torch.nn.Module) -> None:
    """He (Kaiming) normal weights and zero biases for every linear layer.

    PyTorch's default initialisation shrinks the signal by about a factor 6 in variance per ReLU
    layer; through the 8 layers of the predictor or the 8 of the CVAE the input barely reaches the
    output at the start and the first epochs are spent on a plateau (the CVAE's decoder then learnt
    only the marginal count frequencies).
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)


def _one_cycle(optimizer, learning_rate: float, epochs: int, rows: int, batch_size: int):
    """One-cycle schedule (10 % warm-up, cosine decay to 1/1000 of the start) stepped per optimizer step."""
    steps = max(1, epochs * math.ceil(rows / batch_size))
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1,
                                               div_factor=10.0, final_div_factor=100.0)


def train_predictor(prop: str, data: CompositionData, epochs: int = PREDICTOR_EPOCHS, fresh: bool = False,
                    output_dir: Path | None = None, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None, continue_shipped: bool = False) -> dict:
    """Train the Table 1 predictor of ``prop`` on the training split; returns its manifest entry.

    L1 loss on the standardised property (the paper trains on the MAE), AdamW with a one-cycle
    schedule, batches of :data:`BATCH_SIZE`, a checkpoint after every epoch (rerunning resumes);
    the epoch with the lowest validation MAE ships. ``continue_shipped`` starts from the shipped
    weights (same data and split) with a new one-cycle of ``epochs`` epochs at
    :data:`PREDICTOR_CONTINUE_LEARNING_RATE`, a second training stage recorded in the manifest.
    """
    torch.manual_seed(0)
    column = PROPERTIES.index(prop)
    name = PREDICTOR_NAMES[prop]
    output_dir = output_dir or models_dir()
    train_rows, val_rows = data.train_rows, data.validation_rows
    model = PropertyDNN()
    initialise_relu_layers(model)
    labels = torch.from_numpy(data.targets[:, column])
    model.target_mean.fill_(float(labels[train_rows].mean()))
    model.target_std.fill_(float(labels[train_rows].std()))
    learning_rate, stages, start = PREDICTOR_LEARNING_RATE, [], "he"
    if continue_shipped:
        from app.engine.core.registry import load_state_dict

        shipped, previous = load_state_dict(name, output_dir)
        model.load_state_dict(shipped)
        learning_rate, start = PREDICTOR_CONTINUE_LEARNING_RATE, previous["sha256"]
        stages = previous.get("training", {}).get("stages") or [{
            "epochs": previous.get("epochs_completed", previous.get("epochs")),
            "learning_rate": previous.get("training_settings", {}).get("learning_rate"),
            "batch_size": previous.get("training_settings", {}).get("batch_size"),
            "schedule": previous.get("training_settings", {}).get("optimizer")}]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=WEIGHT_DECAY)
    scheduler = _one_cycle(optimizer, learning_rate, epochs, len(train_rows), BATCH_SIZE)

    def step(rows, _rng):
        target = (labels[rows] - model.target_mean) / model.target_std
        loss = (model(_features(data, rows)) - target).abs().mean()  # MAE objective, as the paper
        return loss, {"train_loss": loss.item()}

    def evaluate():
        mae = predictor_mae(model, data, val_rows, column)
        return mae, {"validation_mae": mae}

    config = {"prop": prop, "layers": [list(layer) for layer in PREDICTOR_LAYERS], "vocabulary": len(VOCABULARY),
              "batch": BATCH_SIZE, "learning_rate": learning_rate, "schedule": "one-cycle", "start": start}
    run = f"{name}_continue" if continue_shipped else name
    state = fit_epochs(run, config, epochs, model, optimizer, scheduler, train_rows, BATCH_SIZE, step, evaluate,
                       fresh=fresh, cancel=cancel, progress=progress)
    from app.engine.training.evaluate_ding import predictor_metrics

    metrics = predictor_metrics(model, data, column)
    stage = {"epochs": state["epoch"], "learning_rate": learning_rate, "batch_size": BATCH_SIZE,
             "schedule": "AdamW, one-cycle per step" + (", from the shipped weights" if continue_shipped else
                                                         ", He-normal initialisation")}
    return _write_predictor(prop, model, metrics, state, epochs, data, output_dir, stages + [stage], learning_rate)


def cvae_loss(model: CompositionCVAE, counts: torch.Tensor, conditions: torch.Tensor, kl_weight: float):
    """Categorical cross-entropy summed over element blocks + weighted KL divergence (means per row).

    Returns (loss, cross-entropy, KL), the last two in nats per composition.
    """
    features = functional.one_hot(counts, BLOCK).flatten(1).float()
    logits, mean, log_var = model(features, conditions)
    reconstruction = functional.cross_entropy(logits.transpose(1, 2), counts, reduction="none").sum(1).mean()
    kl = (-0.5 * (1 + log_var - mean.pow(2) - log_var.exp())).sum(1).mean()
    return reconstruction + kl_weight * kl, reconstruction, kl


def kl_weight_after(steps_done: int, steps_per_epoch: int) -> float:
    """KL weight of the next step: linear from 0 to :data:`KL_WEIGHT` over :data:`KL_WARMUP_EPOCHS`."""
    if KL_WARMUP_EPOCHS <= 0:
        return KL_WEIGHT
    return KL_WEIGHT * min(1.0, steps_done / (KL_WARMUP_EPOCHS * steps_per_epoch))


def train_cvae(data: CompositionData, epochs: int = CVAE_EPOCHS, fresh: bool = False,
               output_dir: Path | None = None, progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None) -> dict:
    """Train the Table 2 CVAE on the training split; returns its manifest entry.

    Loss: cross-entropy + ``KL_WEIGHT`` × KL with a linear warm-up; the epoch with the lowest
    validation loss at the final weight ships.
    """
    from app.engine.training.evaluate_ding import reconstruction_accuracy

    torch.manual_seed(0)
    train_rows, val_rows = data.train_rows, data.validation_rows
    model = CompositionCVAE()
    initialise_relu_layers(model)
    targets = torch.from_numpy(data.targets)
    model.condition_mean.copy_(targets[train_rows].mean(0))
    model.condition_std.copy_(targets[train_rows].std(0))
    counts = torch.from_numpy(data.counts)
    optimizer = torch.optim.AdamW(model.parameters(), lr=CVAE_LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    scheduler = _one_cycle(optimizer, CVAE_LEARNING_RATE, epochs, len(train_rows), CVAE_BATCH_SIZE)
    steps_per_epoch = math.ceil(len(train_rows) / CVAE_BATCH_SIZE)

    def step(rows, _rng):
        # The scheduler's step count survives a resume, so the warm-up continues where it stopped.
        loss, reconstruction, kl = cvae_loss(model, counts[rows], targets[rows],
                                             kl_weight_after(scheduler.last_epoch, steps_per_epoch))
        return loss, {"train_loss": loss.item(), "train_cross_entropy": reconstruction.item(),
                      "train_kl": kl.item()}

    def evaluate():
        accuracy = reconstruction_accuracy(model, data, val_rows)
        with torch.no_grad():
            model.eval()
            _, reconstruction, kl = cvae_loss(model, counts[val_rows], targets[val_rows], KL_WEIGHT)
        return float(reconstruction + KL_WEIGHT * kl), {"validation_reconstruction_accuracy": accuracy,
                                                       "validation_cross_entropy": float(reconstruction),
                                                       "validation_kl": float(kl)}

    config = {"hidden": list(CVAE_HIDDEN), "latent": CVAE_LATENT, "kl_weight": KL_WEIGHT,
              "warmup": KL_WARMUP_EPOCHS, "batch": CVAE_BATCH_SIZE, "learning_rate": CVAE_LEARNING_RATE,
              "schedule": "one-cycle", "init": "he", "vocabulary": len(VOCABULARY)}
    state = fit_epochs(CVAE_NAME, config, epochs, model, optimizer, scheduler, train_rows, CVAE_BATCH_SIZE, step,
                       evaluate, fresh=fresh, cancel=cancel, progress=progress)
    metrics = {"validation_reconstruction_accuracy": reconstruction_accuracy(model, data, val_rows),
               "validation_count": int(len(val_rows))}
    return _write_cvae(model, metrics, state, epochs, data, output_dir or models_dir())


def _common_entry(data: CompositionData, epochs: int, state: dict, learning_rate: float,
                  batch_size: int = BATCH_SIZE, start: str = "He-normal initialisation") -> dict:
    return {
        "data": {"dataset": "compositions/oqmd", "sources": [SOURCE], "preparation": data.report,
                 "plausible_ranges": {k: list(v) for k, v in PLAUSIBLE_RANGES.items()}},
        "split": {"method": SPLIT_METHOD, "train_count": int(len(data.train_rows)),
                  "validation_count": int(len(data.validation_rows))},
        "epochs": epochs, "epochs_completed": state["epoch"], "best_epoch": state["best"]["epoch"],
        "history": [{k: v for k, v in h.items()} for h in state["history"]],
        "created": time.strftime("%Y-%m-%d"),
        "training_settings": {"optimizer": f"AdamW (weight decay {WEIGHT_DECAY}), one-cycle schedule per step "
                                           f"(10 % warm-up, cosine decay), {start}",
                              "learning_rate": learning_rate, "batch_size": batch_size},
    }


def _write_predictor(prop, model, metrics, state, epochs, data, output_dir: Path, stages: list | None = None,
                     learning_rate: float = PREDICTOR_LEARNING_RATE) -> dict:
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
             "units": {prop: UNITS[prop]},
             **_common_entry(data, epochs, state, learning_rate,
                             start="started from the shipped weights" if len(stages or []) > 1 else
                             "He-normal initialisation"),
             "training": {"loss": "L1 (MAE) on the standardised property", "stages": stages or []},
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
                                  f"(weight {KL_WEIGHT}, linear warm-up from 0 over {KL_WARMUP_EPOCHS} epochs)"},
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


#: The parts of ``train ding``, in training order: the CVAE (the quickest), then the three predictors.
PARTS = ("cvae", *PROPERTIES)


def train_ding(epochs: int | None = None, fresh: bool = False, output_dir: Path | None = None,
               progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
               parts: tuple[str, ...] = PARTS, continue_shipped: bool = False, paper_predictors: bool = False) -> dict:
    """Write the known-composition summary and train the DING models of ``parts`` (all by default).

    The predictors are the shipped residual models (:func:`train_residual_predictors`: elemental
    part + network, the energy per atom from the formation-enthalpy model); ``paper_predictors``
    trains the paper's Table 1 one-hot DNNs instead (the reference architecture; they then ship).
    ``epochs`` overrides the parts' epoch counts. Every part resumes from its checkpoint, so a
    rerun after an interruption continues, and a finished part is only rewritten. Returns the
    metrics of every trained model by name. ``continue_shipped``: the paper predictors start from
    their shipped weights (see :func:`train_predictor`).
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"Unknown DING parts {sorted(unknown)}; choose from {', '.join(PARTS)}.")
    if continue_shipped and not paper_predictors:
        raise ValueError("Continuing from the shipped weights applies to the paper's one-hot predictors only.")
    data = load_composition_data()
    write_known_compositions(data, output_dir)
    metrics = {}
    if "cvae" in parts:
        entry = train_cvae(data, epochs or CVAE_EPOCHS, fresh, output_dir, progress, cancel)
        metrics[CVAE_NAME] = entry["metrics"]
    predictors = tuple(p for p in PROPERTIES if p in parts)
    if predictors and not paper_predictors:
        metrics.update(train_residual_predictors(epochs, fresh, output_dir, progress, cancel, parts=predictors))
    for part in predictors if paper_predictors else ():
        entry = train_predictor(part, data, epochs or PREDICTOR_EPOCHS, fresh, output_dir, progress, cancel,
                                continue_shipped)
        metrics[PREDICTOR_NAMES[part]] = entry["metrics"]
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
    from app.engine.core.registry import load_manifest
    from app.engine.training.evaluate_ding import predictor_metrics

    continued = name.endswith("_continue")
    model_name = name.removesuffix("_continue")
    prop = next(p for p, n in PREDICTOR_NAMES.items() if n == model_name)
    model = PropertyDNN()
    model.load_state_dict(state["best"]["state"])
    metrics = predictor_metrics(model, data, PROPERTIES.index(prop))
    learning_rate = saved["config"]["learning_rate"]
    stages = load_manifest(output_dir)[model_name]["training"].get("stages", []) if continued else []
    stage = {"epochs": state["epoch"], "learning_rate": learning_rate, "batch_size": saved["config"]["batch"],
             "schedule": "AdamW, one-cycle per step" + (", from the shipped weights" if continued else
                                                         ", He-normal initialisation")}
    return _write_predictor(prop, model, metrics, state, epochs, data, output_dir, stages + [stage], learning_rate)


# --- the shipped predictors: elemental part + learnt residual ------------------------------------

#: Hidden widths and dropout of :class:`CompositionResidualDNN`.
RESIDUAL_HIDDEN = (512, 512, 512, 512)
RESIDUAL_DROPOUT = 0.0
#: Member networks per residual predictor (see :class:`CompositionResidualDNN`), by property. Five
#: formation-enthalpy members: early-stopping MAE 0.0651 → 0.0602 eV/atom (validation 0.068 →
#: 0.063, and the energy per atom derived from it 0.080 → 0.074), at 5× the training time (~17 min
#: on one core). Longer training (100 epochs: 0.0649) and dropout 0.15 (0.0699) did not help. The
#: volume model (~18 min per member) is still a single network.
RESIDUAL_MEMBERS = {"formation_enthalpy": 5, "volume_per_atom": 1}
RESIDUAL_EPOCHS = 36
RESIDUAL_BATCH_SIZE = 256
RESIDUAL_LEARNING_RATE = 2e-3
RESIDUAL_WEIGHT_DECAY = 1e-4
#: Share of the training split held back for early stopping (the validation split is only measured).
EARLY_STOPPING_SHARE = 0.1
#: The properties that get their own residual network; the total energy reuses the formation
#: enthalpy's (see :func:`energy_from_formation_enthalpy`).
RESIDUAL_PROPERTIES = ("formation_enthalpy", "volume_per_atom")


def early_stopping_rows(data: CompositionData, share: float = EARLY_STOPPING_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """The training split cut into rows to fit on and rows to pick the best epoch on (fixed seed)."""
    rows = np.random.default_rng(0).permutation(data.train_rows)
    held = min(max(1, int(round(share * len(rows)))), len(rows) - 1)
    return np.sort(rows[held:]), np.sort(rows[:held])


def fit_elemental_coefficients(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares per-element coefficients ``c`` with ``values ≈ fractions @ c``, shape ``(n_elements,)``.

    An element absent from ``counts`` gets 0 (``lstsq``'s minimum-norm solution).
    """
    fractions = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    coefficients, *_ = np.linalg.lstsq(fractions.astype(np.float64), values.astype(np.float64), rcond=None)
    return coefficients.astype(np.float32)


def build_residual_model(data: CompositionData, column: int, fit_rows: np.ndarray,
                         hidden=RESIDUAL_HIDDEN, dropout: float = RESIDUAL_DROPOUT,
                         members: int = 1) -> "CompositionResidualDNN":
    """A residual model of property ``column`` with its elemental coefficients, element table and
    feature/target standardisation set from ``fit_rows`` (weights random)."""
    from app.engine.compositions.networks import CompositionResidualDNN, element_property_table

    model = CompositionResidualDNN(hidden=hidden, dropout=dropout, members=members)
    initialise_relu_layers(model)
    model.element_properties.copy_(torch.from_numpy(element_property_table()))
    model.elemental_coefficients.copy_(torch.from_numpy(
        fit_elemental_coefficients(data.counts[fit_rows], data.targets[fit_rows, column])))
    if PROPERTIES[column] == "formation_enthalpy":
        model.element_values.zero_()  # an element's formation enthalpy is 0 by definition
    counts = torch.from_numpy(data.counts[fit_rows])
    with torch.no_grad():
        raw = torch.cat([model.raw_features(counts[i:i + 4096]) for i in range(0, len(counts), 4096)])
        model.feature_mean.copy_(raw.mean(0))
        model.feature_std.copy_(raw.std(0).clamp_min(1e-6))
        residual = torch.from_numpy(data.targets[fit_rows, column]) - model.linear_part(counts)
        model.target_mean.fill_(float(residual.mean()))
        model.target_std.fill_(float(residual.std()))
    return model


def train_residual_predictor(prop: str, data: CompositionData, epochs: int = RESIDUAL_EPOCHS, fresh: bool = False,
                             output_dir: Path | None = None, progress: ProgressCallback | None = None,
                             cancel: CancelToken | None = None) -> dict:
    """Train the shipped predictor of ``prop`` (elemental part + residual network); returns its entry.

    The elemental coefficients and all standardisation come from the training split minus its
    early-stopping part; L1 loss on the standardised residual, AdamW, one-cycle schedule per step,
    a checkpoint every epoch; the epoch with the lowest early-stopping MAE ships. The validation
    split (formula hash) is measured once at the end and never used for a choice.
    """
    column = PROPERTIES.index(prop)
    torch.manual_seed(0)
    fit_rows, stop_rows = early_stopping_rows(data)
    members = RESIDUAL_MEMBERS.get(prop, 1)
    model = build_residual_model(data, column, fit_rows, RESIDUAL_HIDDEN, RESIDUAL_DROPOUT, members)
    counts = torch.from_numpy(data.counts)
    labels = torch.from_numpy(data.targets[:, column])
    optimizer = torch.optim.AdamW(model.parameters(), lr=RESIDUAL_LEARNING_RATE, weight_decay=RESIDUAL_WEIGHT_DECAY)
    scheduler = _one_cycle(optimizer, RESIDUAL_LEARNING_RATE, epochs, len(fit_rows), RESIDUAL_BATCH_SIZE)

    def step(rows, _rng):
        target = (labels[rows] - model.linear_part(counts[rows]) - model.target_mean) / model.target_std
        # Each member's own L1 (the mean over members): members learn independently, not as one wide net.
        loss = (model.member_outputs(counts[rows]) - target).abs().mean()
        return loss, {"train_loss": loss.item()}

    def evaluate():
        from app.engine.training.evaluate_ding import predict_rows

        mae = float(np.abs(predict_rows(model, data, stop_rows) - data.targets[stop_rows, column]).mean())
        return mae, {"early_stopping_mae": mae}

    name = PREDICTOR_NAMES[prop]
    config = {"prop": prop, "kind": "ding_residual", "hidden": list(RESIDUAL_HIDDEN), "dropout": RESIDUAL_DROPOUT,
              "members": members,
              "batch": RESIDUAL_BATCH_SIZE, "learning_rate": RESIDUAL_LEARNING_RATE, "vocabulary": len(VOCABULARY),
              "early_stopping_rows": int(len(stop_rows)), "pure_element_rule": True}
    state = fit_epochs(f"{name}_residual", config, epochs, model, optimizer, scheduler, fit_rows, RESIDUAL_BATCH_SIZE,
                       step, evaluate, fresh=fresh, cancel=cancel, progress=progress)
    return _write_residual(prop, model, state, epochs, data, output_dir or models_dir(), len(fit_rows), len(stop_rows))


def energy_from_formation_enthalpy(data: CompositionData, enthalpy_model, output_dir: Path | None = None) -> dict:
    """The total-energy predictor: the formation-enthalpy model with its elemental part replaced.

    OQMD's energy per atom is the formation enthalpy plus the fraction-weighted elemental
    reference energies, so ``E ≈ ΔH_model + Σᵢ xᵢ μᵢ`` with ``μ`` fitted by least squares on
    ``E − ΔH`` over the training rows the enthalpy model was fitted on. A second network would
    learn the same residual again.
    """
    import copy

    fit_rows, stop_rows = early_stopping_rows(data)
    energy, enthalpy = PROPERTIES.index("energy_per_atom"), PROPERTIES.index("formation_enthalpy")
    references = fit_elemental_coefficients(data.counts[fit_rows],
                                            data.targets[fit_rows, energy] - data.targets[fit_rows, enthalpy])
    model = copy.deepcopy(enthalpy_model)
    with torch.no_grad():
        model.elemental_coefficients.add_(torch.from_numpy(references))
        # A pure element: formation enthalpy 0, so its energy per atom is its fitted reference energy.
        model.element_values.copy_(torch.from_numpy(references))
    from app.engine.core.registry import load_manifest

    source = load_manifest(output_dir or models_dir())[PREDICTOR_NAMES["formation_enthalpy"]]
    state = {"epoch": source["epochs_completed"], "best": {"epoch": source["best_epoch"]},
             "history": source.get("history", [])}
    return _write_residual("energy_per_atom", model, state, source["epochs"], data, output_dir or models_dir(),
                           len(fit_rows), len(stop_rows), derived_from=source)


def _write_residual(prop, model, state, epochs, data, output_dir: Path, n_fit: int, n_stop: int,
                    derived_from: dict | None = None) -> dict:
    from app.engine.compositions.networks import ELEMENT_PROPERTY_NAMES
    from app.engine.training.ding_cards import predictor_card
    from app.engine.training.evaluate_ding import predictor_metrics

    name = PREDICTOR_NAMES[prop]
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics = predictor_metrics(model, data, PROPERTIES.index(prop))
    weights = output_dir / f"{name}.pt"
    torch.save(model.state_dict(), weights)
    common = _common_entry(data, epochs, state, RESIDUAL_LEARNING_RATE, RESIDUAL_BATCH_SIZE)
    common["training_settings"]["optimizer"] = (f"AdamW (weight decay {RESIDUAL_WEIGHT_DECAY}), one-cycle schedule "
                                                "per step (10 % warm-up, cosine decay), He-normal initialisation")
    linear = ("least squares of E − ΔH on the element fractions, added to the formation-enthalpy model's "
              "elemental part (the network is the formation-enthalpy model's)" if derived_from is not None else
              "least squares of the property on the element fractions")
    entry = {"file": weights.name, "sha256": sha256_of(weights), "kind": "ding_residual",
             "description": f"Predictor of {prop.replace('_', ' ')} from the composition: fitted elemental part "
                            "plus a network on element fractions and elemental-property statistics",
             "architecture": {"property": prop, "vocabulary": list(VOCABULARY), "hidden": list(model_hidden(model)),
                              "dropout": RESIDUAL_DROPOUT, "members": model.members, "activation": "SiLU",
                              "element_properties": list(ELEMENT_PROPERTY_NAMES),
                              "features": "element fractions; fraction-weighted mean, max, min, range, mean absolute "
                                          "deviation and standard deviation of each element property; number of "
                                          "elements; sum of squared fractions (standardised on the fit rows)",
                              "elemental_part": linear,
                              "pure_elements": _pure_element_rule(prop)},
             "units": {prop: UNITS[prop]}, **common,
             "training": {"loss": "L1 (MAE) on the standardised residual after the elemental part",
                          "early_stopping": f"Best epoch by MAE on {n_stop} training-split rows held out of the "
                                            f"fit ({n_fit} rows fitted); the validation split only measured"},
             "metrics": metrics, "card": f"{name}.md"}
    if derived_from is not None:
        entry["derived_from"] = {"model": PREDICTOR_NAMES["formation_enthalpy"], "sha256": derived_from["sha256"]}
    reference = _paper_reference(name, prop, output_dir)
    if reference is not None:
        entry["reference_paper_architecture"] = reference
    save_manifest_entry(name, entry, output_dir)
    (output_dir / f"{name}.md").write_text(predictor_card(name, entry))
    return entry


def _paper_reference(name: str, prop: str, output_dir: Path) -> dict | None:
    """The validation MAE of the paper-architecture predictor this entry replaces (kept for comparison)."""
    from app.engine.core.errors import ModelError
    from app.engine.core.registry import load_manifest

    try:
        previous = load_manifest(output_dir).get(name)
    except ModelError:
        return None
    if not previous:
        return None
    if previous.get("kind") == "ding_predictor":
        return {"validation_mae": previous["metrics"]["validation_mae"][prop], "sha256": previous["sha256"],
                "layers": previous["architecture"]["layers"], "split": previous["split"]["method"]}
    return previous.get("reference_paper_architecture")


def _pure_element_rule(prop: str) -> str:
    """What the model returns for a one-element composition (the data hold almost none)."""
    return {"formation_enthalpy": "0 by definition",
            "energy_per_atom": "the element's fitted reference energy (formation enthalpy 0)"}.get(
        prop, "the network's prediction (no rule)")


def model_hidden(model) -> list[int]:
    """Hidden widths of a :class:`CompositionResidualDNN`."""
    return [m.out_features for m in model.net if isinstance(m, torch.nn.Linear)][:-1]


def train_residual_predictors(epochs: int | None = None, fresh: bool = False, output_dir: Path | None = None,
                              progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                              parts: tuple[str, ...] = PROPERTIES, data: CompositionData | None = None) -> dict:
    """Train (resume) the shipped residual predictors of ``parts``; the energy follows the shipped
    (or just trained) formation-enthalpy model."""
    data = data or load_composition_data()
    output_dir = output_dir or models_dir()
    metrics, enthalpy = {}, None
    for prop in RESIDUAL_PROPERTIES:
        if prop in parts:
            entry = train_residual_predictor(prop, data, epochs or RESIDUAL_EPOCHS, fresh, output_dir, progress, cancel)
            metrics[PREDICTOR_NAMES[prop]] = entry["metrics"]
    if "energy_per_atom" in parts:
        from app.engine.core.registry import load_state_dict

        state, entry = load_state_dict(PREDICTOR_NAMES["formation_enthalpy"], output_dir)
        if entry.get("kind") != "ding_residual":
            raise ValueError("The energy-per-atom predictor is derived from a residual formation-enthalpy model; "
                             "train that first.")
        from app.engine.compositions.runtime import build_predictor

        enthalpy = build_predictor(entry)
        enthalpy.load_state_dict(state)
        entry = energy_from_formation_enthalpy(data, enthalpy, output_dir)
        metrics[PREDICTOR_NAMES["energy_per_atom"]] = entry["metrics"]
    return metrics
