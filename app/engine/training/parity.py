"""Parity samples: a seeded, bounded set of (true, predicted) validation pairs per target.

The window's Models dialog draws them as parity plots, so every evaluation command that records its
metrics in the manifest can store one next to its MAEs (``metrics["parity_sample"]``). A sample is
small (≤ :data:`MAX_POINTS` pairs per target, floats rounded to :data:`SIGNIFICANT_DIGITS` digits of
the target's largest magnitude, so a 0–8 eV band gap keeps 3 decimals)
so the manifest stays readable; the MAE stored with it is computed on *all* labelled rows, not on
the sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.engine.core.registry import load_manifest, save_manifest_entry

#: Most pairs kept per target (the plot stays legible, the manifest small).
MAX_POINTS = 500
#: Significant digits of the stored floats, counted on the target's largest magnitude (well below any
#: model's error).
SIGNIFICANT_DIGITS = 4
#: Seed of the row choice, so a re-evaluation of the same weights stores the same sample.
SEED = 0
#: Key of the sample inside a manifest entry's ``metrics``.
METRICS_KEY = "parity_sample"


def _decimals(values: np.ndarray, significant_digits: int) -> int:
    """Decimals that keep ``significant_digits`` digits of the largest magnitude in ``values``."""
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    if largest == 0.0:
        return significant_digits
    return max(0, significant_digits - 1 - math.floor(math.log10(largest)))


def parity_sample(
    true: np.ndarray,
    predicted: np.ndarray,
    targets: Sequence[str],
    *,
    max_points: int = MAX_POINTS,
    seed: int = SEED,
    significant_digits: int = SIGNIFICANT_DIGITS,
) -> dict[str, dict]:
    """A bounded random sample of (true, predicted) pairs for each target.

    Parameters
    ----------
    true, predicted : np.ndarray
        Labels and predictions in physical units, shape ``(n_rows,)`` for one target or
        ``(n_rows, len(targets))``. Rows whose label or prediction is not finite are left out
        (per target: a row may be labelled for one target only).
    targets : sequence of str
        Target names, in column order.
    max_points : int
        Most pairs kept per target; all finite rows when there are fewer.
    seed : int
        Seed of the row choice (numpy ``default_rng``).
    significant_digits : int
        Digits kept of the target's largest magnitude (over true and predicted); smaller values get
        the same decimals.

    Returns
    -------
    dict
        ``{target: {"true": [...], "predicted": [...], "count": n_finite_rows, "mae": float}}``;
        ``true`` and ``predicted`` hold the sampled pairs in row order, ``count`` and ``mae`` are over
        every finite row. Targets without a finite row are left out.
    """
    true = np.asarray(true, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    if true.ndim == 1:
        true, predicted = true[:, None], predicted[:, None]
    if true.shape != predicted.shape or true.shape[1] != len(targets):
        raise ValueError(f"true {true.shape} and predicted {predicted.shape} must both be (n_rows, {len(targets)}).")
    rng = np.random.default_rng(seed)
    sample: dict[str, dict] = {}
    for k, target in enumerate(targets):
        finite = np.flatnonzero(np.isfinite(true[:, k]) & np.isfinite(predicted[:, k]))
        if not len(finite):
            continue
        chosen = np.sort(rng.choice(finite, size=min(max_points, len(finite)), replace=False))
        decimals = _decimals(np.concatenate([true[chosen, k], predicted[chosen, k]]), significant_digits)
        sample[str(target)] = {
            # + 0.0 turns -0.0 into 0.0
            "true": (np.round(true[chosen, k], decimals) + 0.0).tolist(),
            "predicted": (np.round(predicted[chosen, k], decimals) + 0.0).tolist(),
            "count": int(len(finite)),
            "mae": float(np.abs(predicted[finite, k] - true[finite, k]).mean()),
        }
    return sample


def sample_is_valid(sample: object) -> bool:
    """True when ``sample`` has the shape :func:`parity_sample` returns (for readers of the manifest)."""
    if not isinstance(sample, dict) or not sample:
        return False
    for value in sample.values():
        if not isinstance(value, dict):
            return False
        true, predicted = value.get("true"), value.get("predicted")
        if not isinstance(true, list) or not isinstance(predicted, list) or len(true) != len(predicted) or not true:
            return False
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in true + predicted):
            return False
    return True


def record_parity_sample(name: str, sample: dict[str, dict], command: str, folder: Path | None = None) -> dict:
    """Store ``sample`` in model ``name``'s manifest entry (``metrics.parity_sample``) and return the entry.

    The manifest is re-read right before writing and only this entry changes.

    Parameters
    ----------
    name : str
        Manifest key of the model.
    sample : dict
        What :func:`parity_sample` returned.
    command : str
        The command that measured it (stored as ``metrics.parity_sample_command``).
    folder : Path, optional
        Models folder (default: the shipped one).
    """
    entries = load_manifest(folder)
    if name not in entries:
        raise KeyError(f"Model '{name}' is not in the manifest.")
    entry = entries[name]
    metrics = entry.setdefault("metrics", {})
    metrics[METRICS_KEY] = sample
    metrics[f"{METRICS_KEY}_command"] = command
    save_manifest_entry(name, entry, folder)
    return entry
