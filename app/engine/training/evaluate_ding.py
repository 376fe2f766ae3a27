"""``crystal-designer evaluate ding``: the DING models measured on compositions they never trained on.

- Predictors: MAE on the validation split, over all of it and inside the paper's reliable ranges
  (Table 3), against the paper's 0.051 eV/atom, 0.072 eV/atom and 0.398 Å³/atom.
- CVAE: reconstruction accuracy as the paper defines it, the share of validation compositions
  whose decoded feature vector (the most likely count of every element, from the latent mean)
  is identical to the input's.
- Generation: predicted formation enthalpy of samples at two targets, uniqueness and novelty.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from app.engine.compositions.formula import one_hot_counts
from app.engine.compositions.networks import PROPERTIES, CompositionCVAE, PropertyDNN
from app.engine.compositions.runtime import RELIABLE_RANGES
from app.engine.training.ding_data import CompositionData

logger = logging.getLogger(__name__)

PAPER_MAE = {"formation_enthalpy": 0.051, "energy_per_atom": 0.072, "volume_per_atom": 0.398}
PAPER_RECONSTRUCTION_ACCURACY = 0.943


@torch.no_grad()
def predict_rows(model, data: CompositionData, rows: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Predictions (property units) of a predictor (``PropertyDNN`` or ``CompositionResidualDNN``) on ``rows``."""
    was_training = model.training
    model.eval()
    parts = [model.predict_counts(torch.from_numpy(data.counts[rows[i:i + batch]])).numpy()
             for i in range(0, len(rows), batch)]
    model.train(was_training)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def predictor_metrics(model: PropertyDNN, data: CompositionData, column: int) -> dict:
    """Validation MAE overall and inside the paper's reliable range of the property."""
    prop = PROPERTIES[column]
    rows = data.validation_rows
    truth = data.targets[rows, column]
    error = np.abs(predict_rows(model, data, rows) - truth)
    low, high = RELIABLE_RANGES[prop]
    inside = (truth >= low) & (truth <= high)
    return {"validation_mae": {prop: float(error.mean())},
            "validation_mae_in_reliable_range": {prop: float(error[inside].mean()) if inside.any() else None},
            "validation_rmse": {prop: float(np.sqrt((error ** 2).mean()))},
            "validation_count": int(len(rows)), "validation_count_in_reliable_range": int(inside.sum()),
            "paper_mae": {prop: PAPER_MAE[prop]}}


@torch.no_grad()
def reconstruction_accuracy(model: CompositionCVAE, data: CompositionData, rows: np.ndarray,
                            batch: int = 4096) -> float:
    """Share of ``rows`` whose decoded counts (from the latent mean) equal the input counts exactly."""
    model.eval()
    hits = 0
    for start in range(0, len(rows), batch):
        part = rows[start:start + batch]
        counts = torch.from_numpy(data.counts[part])
        conditions = torch.from_numpy(data.targets[part])
        mean, _ = model.encode(torch.from_numpy(one_hot_counts(data.counts[part])), conditions)
        hits += int((model.decode_counts(mean, conditions) == counts).all(dim=1).sum())
    return hits / max(len(rows), 1)


def generation_report(generator, n_samples: int = 500, seed: int = 0,
                      targets: tuple[float, ...] = (-2.0, -0.5)) -> dict:
    """Samples at formation-enthalpy targets: medians of the predicted value, unique and novel shares."""
    report: dict = {"n_samples": n_samples, "seed": seed, "by_target": {}}
    for target in targets:
        result = generator.generate({"formation_enthalpy": target}, n=n_samples, seed=seed)
        counts = result.counts
        decoded = max(counts["decoded"], 1)
        unique = max(counts["unique"], 1)
        report["by_target"][f"{target:g}"] = {
            "median_predicted_formation_enthalpy": result.median("formation_enthalpy"),
            "decoded_fraction": counts["decoded"] / n_samples,
            "unique_fraction": counts["unique"] / decoded,
            "not_in_training_fraction_of_unique": counts["not_in_training"] / unique,
            "charge_balanced_fraction_of_unique": counts["charge_balanced"] / unique,
            "counts": counts}
    low, high = (report["by_target"][f"{t:g}"]["median_predicted_formation_enthalpy"] for t in targets[:2])
    report["median_shift_eV_per_atom"] = None if low is None or high is None else high - low
    return report


def evaluate_ding(n_samples: int = 500, record: bool = False, folder=None, sampling: dict | None = None) -> dict:
    """Recompute every DING figure from the shipped models on the validation split.

    ``sampling``: keyword arguments of :class:`CompositionGenerator` (``temperature``,
    ``latent_scale``, ``top_p``) for the generation figures; unset ones keep the defaults.
    """
    from app.engine.compositions.runtime import CVAE_NAME, CompositionGenerator
    from app.engine.training.ding_data import load_composition_data

    data = load_composition_data()
    generator = CompositionGenerator(folder=folder, **(sampling or {}))
    report: dict = {"validation_count": int(len(data.validation_rows)), "predictors": {}}
    for column, prop in enumerate(PROPERTIES):
        report["predictors"][prop] = predictor_metrics(generator.predictor.models[prop], data, column)
    report["reconstruction_accuracy"] = reconstruction_accuracy(generator.cvae, data, data.validation_rows)
    report["paper_reconstruction_accuracy"] = PAPER_RECONSTRUCTION_ACCURACY
    report["generation"] = generation_report(generator, n_samples=n_samples)
    report["generation"]["sampling"] = {"temperature": generator.temperature, "latent_scale": generator.latent_scale,
                                        "top_p": generator.top_p}
    if record:
        from app.engine.compositions.runtime import PREDICTOR_NAMES
        from app.engine.training.parity import parity_sample, record_parity_sample

        flags = "".join(f" --{key.replace('_', '-')} {value:g}" for key, value in (sampling or {}).items())
        command = f"crystal-designer evaluate ding --n-samples {n_samples}{flags} --record"
        _record(report, folder, command, CVAE_NAME)
        rows = data.validation_rows
        for column, prop in enumerate(PROPERTIES):
            predicted = predict_rows(generator.predictor.models[prop], data, rows)
            record_parity_sample(PREDICTOR_NAMES[prop], parity_sample(data.targets[rows, column], predicted, [prop]),
                                 command, folder)
    return report


def _record(report: dict, folder, command: str, name: str) -> None:
    from app.engine.core.paths import models_dir
    from app.engine.core.registry import load_manifest, save_manifest_entry
    from app.engine.training.ding_cards import cvae_card

    folder = folder or models_dir()
    entry = load_manifest(folder)[name]
    generation = report["generation"]
    summary = {"command": command, "n_samples": generation["n_samples"], "sampling": generation.get("sampling"),
               "median_shift_eV_per_atom (target -0.5 minus -2.0)": generation["median_shift_eV_per_atom"]}
    for target, values in generation["by_target"].items():
        summary[f"target {target} eV/atom"] = {k: (round(v, 4) if isinstance(v, float) else v)
                                              for k, v in values.items() if k != "counts"}
    entry["metrics"]["generation"] = summary
    save_manifest_entry(name, entry, folder)
    (folder / entry["card"]).write_text(cvae_card(entry))
