"""DING at run time: predict the three properties of compositions and generate compositions for targets.

- :class:`CompositionPredictor` holds the three Table 1 predictors and answers one record per
  formula (an ``error`` for a formula it cannot use, never an exception for the batch).
- :class:`CompositionGenerator` samples the CVAE decoder with z ~ N(0, s²I) and the target
  properties, draws the count of every element from the decoder's softmax (at a temperature;
  temperature 0 reads the most likely count, as the paper), and flags each candidate: charge
  balanced (oxidation-state guess), not in the training data, unique within the run.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from app.engine.compositions.formula import (VOCABULARY, FormulaError, count_vector, counts_from_vector,
                                             formula_string, parse_formula)
from app.engine.compositions.networks import (PROPERTIES, UNITS, CompositionCVAE, CompositionResidualDNN,
                                              PropertyDNN)
from app.engine.core.cancel import CancelToken, ProgressCallback
from app.engine.core.errors import CrystalDesignerError, ModelError
from app.engine.core.oxidation import charge_balanced
from app.engine.core.paths import models_dir

logger = logging.getLogger(__name__)

#: Manifest names of the shipped DING models.
PREDICTOR_NAMES = {"formation_enthalpy": "ding_formation_enthalpy", "energy_per_atom": "ding_energy_per_atom",
                   "volume_per_atom": "ding_volume_per_atom"}
CVAE_NAME = "ding_cvae"
KNOWN_NAME = "ding_known_compositions"
KNOWN_COMPOSITIONS_FILE = "ding_known_compositions.npz"

#: Ranges within which the paper found its predictors reliable (Table 3), in the properties' units.
RELIABLE_RANGES = {"formation_enthalpy": (-3.90, 3.06), "energy_per_atom": (-12.78, -0.77),
                   "volume_per_atom": (7.06, 75.83)}
MAX_SAMPLES = 100_000
#: Default softmax temperature of the count draws (0: the most likely count of every element, the
#: paper's decoding). Measured with the shipped models (500 samples at -2.0 and -0.5 eV/atom,
#: models/ding_cvae.md): the paper's decoding gives 77 % unique compositions and a median shift of
#: 0.38 eV/atom between the targets; drawing at temperature 2 within a nucleus of 0.8 from z ~
#: N(0, 0.7²I) gives 94-96 % unique, 93-98 % new and a 1.55 eV/atom shift.
DEFAULT_TEMPERATURE = 2.0
#: Default spread s of the latent draws z ~ N(0, s²I): below 1, as the decoder was trained with a
#: KL weight below 1, so its posteriors lie inside the prior and the prior's tails decode poorly.
DEFAULT_LATENT_SCALE = 0.7
#: Default nucleus of the count draws: only the most likely counts that together hold this
#: probability can be drawn (1: all counts).
DEFAULT_TOP_P = 0.8


class TargetError(CrystalDesignerError):
    """Generation targets that cannot be used."""


def _check_vocabulary(entry: dict, name: str) -> None:
    if tuple(entry["architecture"]["vocabulary"]) != VOCABULARY:
        raise ModelError(f"Model '{name}' was trained on another element list than this version of the program.")


def build_predictor(entry: dict):
    """A predictor network with random weights for a manifest entry of kind ``ding_predictor``
    (the paper's one-hot DNN) or ``ding_residual`` (elemental part + learnt residual)."""
    architecture = entry["architecture"]
    if entry.get("kind") == "ding_residual":
        return CompositionResidualDNN(n_element_properties=len(architecture["element_properties"]),
                                      hidden=tuple(architecture["hidden"]), dropout=architecture.get("dropout", 0.0),
                                      members=architecture.get("members", 1))
    return PropertyDNN(layers=[tuple(layer) for layer in architecture["layers"]])


class CompositionPredictor:
    """The three DING property predictors.

    Parameters
    ----------
    models : dict, optional
        ``{property: PropertyDNN or CompositionResidualDNN}`` already built (tests with random
        weights); default: load the shipped ones.
    folder : Path, optional
        Models folder (default: the shipped ``models/``).
    """

    def __init__(self, models: dict[str, PropertyDNN] | None = None, folder: Path | None = None):
        import torch

        from app.engine.core.registry import load_state_dict

        if models is None:
            models = {}
            for prop, name in PREDICTOR_NAMES.items():
                state, entry = load_state_dict(name, folder or models_dir())
                _check_vocabulary(entry, name)
                model = build_predictor(entry)
                model.load_state_dict(state)
                models[prop] = model
        missing = [prop for prop in PROPERTIES if prop not in models]
        if missing:
            raise ModelError(f"Composition property models missing: {', '.join(missing)}.")
        self.models = {prop: models[prop].eval() for prop in PROPERTIES}
        self._torch = torch

    def predict_counts(self, count_rows: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Properties ``(n, 3)`` (PROPERTIES order, their units) of count rows ``(n, len(VOCABULARY))``."""
        torch = self._torch
        out = np.zeros((len(count_rows), len(PROPERTIES)), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(count_rows), batch_size):
                counts = torch.from_numpy(np.asarray(count_rows[start:start + batch_size], dtype=np.int64))
                for column, prop in enumerate(PROPERTIES):
                    out[start:start + len(counts), column] = self.models[prop].predict_counts(counts).numpy()
        return out

    def predict(self, formulas: Sequence[str]) -> list[dict]:
        """One record per formula: ``formula_input``, ``formula`` and the three properties, or ``error``."""
        records: list[dict] = []
        rows, positions = [], []
        for text in formulas:
            record = {"formula_input": text, "formula": None, **{prop: None for prop in PROPERTIES}}
            try:
                counts = parse_formula(text)
                record["formula"] = formula_string(counts)
                rows.append(count_vector(counts))
                positions.append(len(records))
            except FormulaError as error:
                record["error"] = str(error)
            records.append(record)
        if rows:
            values = self.predict_counts(np.stack(rows))
            for row, position in enumerate(positions):
                records[position].update({prop: float(values[row, k]) for k, prop in enumerate(PROPERTIES)})
                records[position]["warnings"] = range_warnings(records[position], "Predicted")
        return records


def range_warnings(values: dict, what: str = "Target") -> list[str]:
    """Warnings for properties outside the predictors' reliable ranges (paper, Table 3)."""
    out = []
    for prop, (low, high) in RELIABLE_RANGES.items():
        value = values.get(prop)
        if value is not None and not (low <= value <= high):
            out.append(f"{what} {prop.replace('_', ' ')} {value:g} {UNITS[prop]} is outside the range where the "
                       f"predictors are reliable ({low:g} to {high:g} {UNITS[prop]}).")
    return out


def parse_targets(pairs: Sequence[str]) -> dict[str, float]:
    """``["formation_enthalpy=-2.0", ...]`` → ``{"formation_enthalpy": -2.0}`` (raises :class:`TargetError`)."""
    targets: dict[str, float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in PROPERTIES:
            raise TargetError(f"Target '{pair}' is not of the form PROPERTY=VALUE with PROPERTY one of "
                              f"{', '.join(PROPERTIES)}.")
        try:
            number = float(value)
        except ValueError:
            raise TargetError(f"Target '{pair}': '{value}' is not a number.") from None
        if not math.isfinite(number):
            raise TargetError(f"Target '{pair}' is not a finite number.")
        targets[key] = number
    if not targets:
        raise TargetError("Give at least one target property (e.g. formation_enthalpy=-2.0).")
    return targets


def formula_hash(formula: str) -> int:
    """64-bit fingerprint of a normalised formula: the first 8 bytes of its sha256, little-endian.

    The shipped list of known compositions holds only these fingerprints, not the formulas; two
    different formulas share one with a probability of about 1e-10 over the whole list.
    """
    return int.from_bytes(hashlib.sha256(formula.encode("utf-8")).digest()[:8], "little")


class KnownCompositions:
    """What the generator knows of the training data, without the data itself.

    - ``hashes``: sorted :func:`formula_hash` fingerprints of every composition of the data (the
      ``not_in_training`` flag);
    - a Gaussian mixture fitted to the three training targets (PROPERTIES order, their units),
      from which :meth:`conditions` draws the targets the user left unset, given the set ones.

    Parameters
    ----------
    hashes : array of uint64, shape (m,)
        Fingerprints of the known formulas (any order).
    weights : array, shape (k,)
        Mixture weights (sum 1).
    means : array, shape (k, 3)
        Component means in the properties' units.
    covariances : array, shape (k, 3, 3)
        Component covariance matrices.
    low, high : array, shape (3,)
        Range of the training targets; drawn values are clipped to it.
    """

    def __init__(self, hashes, weights, means, covariances, low, high):
        self.hashes = np.unique(np.asarray(hashes, dtype=np.uint64))
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64).reshape(-1, len(PROPERTIES))
        self.covariances = np.asarray(covariances, dtype=np.float64).reshape(-1, len(PROPERTIES), len(PROPERTIES))
        self.low, self.high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        if not (len(self.weights) == len(self.means) == len(self.covariances) > 0):
            raise ModelError("The known-composition summary has an inconsistent target mixture.")

    @classmethod
    def from_formulas(cls, formulas: Sequence[str], **mixture) -> "KnownCompositions":
        """Build from normalised formulas (hashed here) and the mixture's arrays."""
        return cls(np.array([formula_hash(f) for f in formulas], dtype=np.uint64), **mixture)

    @classmethod
    def load(cls, folder: Path | None = None) -> "KnownCompositions":
        """The shipped summary (``models/ding_known_compositions.npz``), checked against the manifest."""
        from app.engine.core.registry import verified_weights_path

        path, _ = verified_weights_path(KNOWN_NAME, folder or models_dir())
        try:
            with np.load(path, allow_pickle=False) as saved:
                if tuple(str(p) for p in saved["properties"]) != PROPERTIES:
                    raise ModelError(f"{path.name} summarises other properties than {', '.join(PROPERTIES)}.")
                return cls(saved["formula_hashes"], saved["mixture_weights"], saved["mixture_means"],
                           saved["mixture_covariances"], saved["target_low"], saved["target_high"])
        except (OSError, KeyError, ValueError) as error:
            raise ModelError(f"The known-composition summary {path} cannot be read: {error}") from error

    def save(self, path: Path) -> None:
        """Write the summary as an ``.npz`` (plain arrays, loadable without pickle)."""
        with open(path, "wb") as handle:  # a handle: np.savez would append ".npz" to a bare name
            np.savez_compressed(handle, formula_hashes=self.hashes, mixture_weights=self.weights,
                                mixture_means=self.means, mixture_covariances=self.covariances,
                                target_low=self.low, target_high=self.high, properties=np.array(PROPERTIES))

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, formula: str) -> bool:
        value = np.uint64(formula_hash(formula))
        position = int(np.searchsorted(self.hashes, value))
        return position < len(self.hashes) and self.hashes[position] == value

    def conditions(self, targets: dict[str, float], n: int, rng: np.random.Generator) -> np.ndarray:
        """Condition rows ``(n, 3)``: the set targets, and for unset ones draws from the mixture
        conditioned on the set values (so the combination is one the training data makes plausible).

        Each row picks a component with probability proportional to its weight times the density of
        the set targets under it, then draws the unset targets from that component's conditional
        Gaussian; the draws are clipped to the training range.
        """
        rows = np.zeros((n, len(PROPERTIES)))
        fixed = [k for k, prop in enumerate(PROPERTIES) if prop in targets]
        free = [k for k in range(len(PROPERTIES)) if k not in fixed]
        value = np.array([targets[PROPERTIES[k]] for k in fixed], dtype=np.float64)
        rows[:, fixed] = value
        if not free:
            return rows
        log_resp = np.log(self.weights + 1e-300)
        shifts, factors, chol = [], [], []
        for k in range(len(self.weights)):
            cov = self.covariances[k]
            if fixed:
                cov_ff = cov[np.ix_(fixed, fixed)]
                cov_uf = cov[np.ix_(free, fixed)]
                gain = np.linalg.solve(cov_ff, cov_uf.T).T  # Σ_uf Σ_ff⁻¹
                residual = value - self.means[k, fixed]
                _, log_det = np.linalg.slogdet(cov_ff)
                log_resp[k] += -0.5 * (residual @ np.linalg.solve(cov_ff, residual) + log_det)
                shifts.append(self.means[k, free] + gain @ residual)
                conditional = cov[np.ix_(free, free)] - gain @ cov_uf.T
            else:
                shifts.append(self.means[k, free])
                conditional = cov[np.ix_(free, free)]
            chol.append(np.linalg.cholesky(conditional + 1e-9 * np.eye(len(free))))
        responsibility = np.exp(log_resp - log_resp.max())
        components = rng.choice(len(self.weights), size=n, p=responsibility / responsibility.sum())
        noise = rng.standard_normal((n, len(free)))
        drawn = np.stack(shifts)[components] + np.einsum("nij,nj->ni", np.stack(chol)[components], noise)
        rows[:, free] = np.clip(drawn, self.low[free], self.high[free])
        return rows


@dataclass
class GeneratedComposition:
    """One decoded sample and what the predictors say about it."""

    formula: str
    predicted: dict[str, float]
    charge_balanced: bool
    not_in_training: bool
    unique: bool
    n_elements: int

    def as_record(self) -> dict:
        return {"formula": self.formula, **self.predicted, "n_elements": self.n_elements,
                "charge_balanced": self.charge_balanced, "not_in_training": self.not_in_training,
                "unique": self.unique}


@dataclass
class CompositionGenerationResult:
    targets: dict[str, float]
    candidates: list[GeneratedComposition]
    counts: dict[str, int]
    warnings: list[str] = field(default_factory=list)

    def median(self, prop: str) -> float | None:
        values = [c.predicted[prop] for c in self.candidates]
        return float(np.median(values)) if values else None


class CompositionGenerator:
    """The DING CVAE decoder plus the predictors and the known compositions.

    Parameters
    ----------
    cvae : CompositionCVAE, optional
        Built model (tests); default: the shipped ``ding_cvae``.
    predictor : CompositionPredictor, optional
        Default: the shipped predictors.
    known : KnownCompositions, optional
        Default: the shipped summary ``models/ding_known_compositions.npz``.
    folder : Path, optional
        Models folder (default: the shipped ``models/``).
    temperature : float
        Softmax temperature of each element's count draw; 0 takes the most likely count (the
        paper's decoding), 1 draws from the decoder's softmax as it is, lower values sharpen it.
    latent_scale : float
        Standard deviation of the latent draws (1: the prior).
    top_p : float
        Nucleus of each element's count draw (0 < top_p ≤ 1): the draw is limited to the most likely
        counts that together hold ``top_p`` of the probability, so an element the decoder gives a
        few per cent is never added by chance (independent draws over the whole vocabulary would
        otherwise add several stray elements to every composition).
    """

    def __init__(self, cvae: CompositionCVAE | None = None, predictor: CompositionPredictor | None = None,
                 known: KnownCompositions | None = None, folder: Path | None = None,
                 temperature: float = DEFAULT_TEMPERATURE, latent_scale: float = DEFAULT_LATENT_SCALE,
                 top_p: float = DEFAULT_TOP_P):
        import torch

        if not (math.isfinite(temperature) and temperature >= 0):
            raise TargetError(f"The sampling temperature must be 0 or positive (got {temperature}).")
        if not (math.isfinite(latent_scale) and latent_scale > 0):
            raise TargetError(f"The latent spread must be positive (got {latent_scale}).")
        if not (math.isfinite(top_p) and 0 < top_p <= 1):
            raise TargetError(f"The nucleus top_p must lie in (0, 1] (got {top_p}).")
        self.temperature, self.latent_scale, self.top_p = float(temperature), float(latent_scale), float(top_p)

        from app.engine.core.registry import load_state_dict

        folder = folder or models_dir()
        if cvae is None:
            state, entry = load_state_dict(CVAE_NAME, folder)
            _check_vocabulary(entry, CVAE_NAME)
            cvae = CompositionCVAE(hidden=tuple(entry["architecture"]["hidden"]),
                                   latent_dim=entry["architecture"]["latent_dim"])
            cvae.load_state_dict(state)
        self.cvae = cvae.eval()
        self.predictor = predictor or CompositionPredictor(folder=folder)
        self.known = known or KnownCompositions.load(folder)
        self._torch = torch

    def sample_counts(self, conditions: np.ndarray, seed: int) -> np.ndarray:
        """Decoded count rows ``(n, len(VOCABULARY))`` for condition rows ``(n, 3)``.

        z ~ N(0, latent_scale² I); each element's count is the most likely one (temperature 0) or
        drawn from the decoder's softmax at ``temperature``, limited to its ``top_p`` nucleus.
        """
        torch = self._torch
        generator = torch.Generator().manual_seed(int(seed))
        with torch.inference_mode():
            latent = torch.randn(len(conditions), self.cvae.latent_dim, generator=generator) * self.latent_scale
            logits = self.cvae.decode_logits(latent, torch.as_tensor(conditions, dtype=torch.float32))
            if self.temperature == 0:
                return logits.argmax(dim=-1).numpy()
            probabilities = torch.softmax(logits / self.temperature, dim=-1)
            if self.top_p < 1:
                ordered, order = probabilities.sort(dim=-1, descending=True)
                # Keep a class while the classes more likely than it hold less than top_p.
                outside = (ordered.cumsum(dim=-1) - ordered) >= self.top_p
                probabilities = probabilities.scatter(-1, order, ordered.masked_fill(outside, 0.0))
            draws = torch.multinomial(probabilities.reshape(-1, probabilities.shape[-1]), 1, generator=generator)
            return draws.view(probabilities.shape[:-1]).numpy()

    def generate(self, targets: dict[str, float], n: int = 100, seed: int = 0, batch_size: int = 256,
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None
                 ) -> CompositionGenerationResult:
        """Decode ``n`` samples at ``targets`` and flag each decoded composition.

        Parameters
        ----------
        targets : dict
            Property → value in its units (at least one of :data:`PROPERTIES`); unset ones are
            drawn from the training targets' mixture given the set ones.
        n : int
            Samples to draw (1 .. 100 000).
        seed : int
            Random seed: the same seed and targets give the same compositions.

        Returns
        -------
        CompositionGenerationResult
            One candidate per decoded (non-empty) sample, in sampling order; ``unique`` is False for
            a repeat of an earlier candidate. ``counts``: samples, decoded, unique, not_in_training,
            charge_balanced, and kept (unique, not in training, charge balanced).
        """
        unknown = set(targets) - set(PROPERTIES)
        if unknown or not targets:
            raise TargetError(f"Targets must be some of {', '.join(PROPERTIES)} (got {', '.join(targets) or 'none'}).")
        if not 1 <= n <= MAX_SAMPLES:
            raise TargetError(f"The number of samples must be between 1 and {MAX_SAMPLES} (got {n}).")
        rng = np.random.default_rng(seed)
        conditions = self.known.conditions(targets, n, rng)
        candidates: list[GeneratedComposition] = []
        seen: set[str] = set()
        for start in range(0, n, batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            count_rows = self.sample_counts(conditions[start:start + batch_size], seed * 1_000_003 + start)
            candidates += self._flag(count_rows, seen)
            if progress is not None:
                progress(min(start + batch_size, n), n, "decoding compositions")
        return CompositionGenerationResult(dict(targets), candidates, _counts(n, candidates), range_warnings(targets))

    def _flag(self, count_rows: np.ndarray, seen: set[str]) -> list[GeneratedComposition]:
        decoded = [(row, counts_from_vector(row)) for row in count_rows]
        decoded = [(row, counts) for row, counts in decoded if counts]
        if not decoded:
            return []
        values = self.predictor.predict_counts(np.stack([count_vector(c) for _, c in decoded]))
        out = []
        for (_, counts), value in zip(decoded, values):
            formula = formula_string(counts)
            out.append(GeneratedComposition(
                formula=formula, predicted={prop: float(value[k]) for k, prop in enumerate(PROPERTIES)},
                charge_balanced=charge_balanced(formula), not_in_training=formula not in self.known,
                unique=formula not in seen, n_elements=len(counts)))
            seen.add(formula)
        return out


def _counts(n: int, candidates: list[GeneratedComposition]) -> dict[str, int]:
    unique = [c for c in candidates if c.unique]
    return {"samples": n, "decoded": len(candidates), "unique": len(unique),
            "not_in_training": sum(c.not_in_training for c in unique),
            "charge_balanced": sum(c.charge_balanced for c in unique),
            "kept": sum(c.not_in_training and c.charge_balanced for c in unique)}
