"""Where random latent samples come from: a Gaussian mixture fitted to the aggregate posterior.

A VAE trained with a small KL weight (β ≪ 1) keeps its posteriors far from the N(0, I) prior,
so latent vectors drawn from N(0, I) mostly land where no training crystal was encoded and
decode into overlapping or half-formed atoms. The aggregate posterior
q(z) = (1/N) Σᵢ q(z | xᵢ) is where the decoder was trained; this module samples a compact
approximation of it: per condition class (e.g. formation-energy decile), a mixture of K
diagonal Gaussians over the training cells' posterior means, each widened by the mean
posterior variance of its members (so the mixture covers q(z | xᵢ), not only μᵢ).

The mixture is fitted by the training code (``crystal-designer train prior --model NAME``) and
stored next to the model as ``models/NAME_prior.npz``; any latent-variable model can use it.
Sampling is plain numpy.
"""

from __future__ import annotations

import logging

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.engine.core.errors import ModelError

#: Version of the ``.npz`` layout below.
PRIOR_FORMAT = 1


logger = logging.getLogger(__name__)

def prior_name(model_name: str) -> str:
    """Manifest name of a model's latent prior (``density_vae`` → ``density_vae_prior``)."""
    return f"{model_name}_prior"


def prior_path(model_name: str, folder: Path | None = None) -> Path:
    """Where a model's latent prior lives (``models/<model>_prior.npz`` by default)."""
    from app.engine.core.paths import models_dir

    return (folder or models_dir()) / f"{prior_name(model_name)}.npz"


@dataclass
class LatentPrior:
    """Per-condition mixtures of diagonal Gaussians in a latent space.

    Attributes
    ----------
    weights : numpy.ndarray
        Shape ``(C, K)``: component weights of each condition class (rows sum to 1; unused
        components weigh 0).
    means : numpy.ndarray
        Shape ``(C, K, D)``: component means (latent units).
    scales : numpy.ndarray
        Shape ``(C, K, D)``: component standard deviations per latent dimension.
    condition_weights : numpy.ndarray
        Shape ``(C,)``: share of training cells in each condition class (used when no class is
        asked for).
    """

    weights: np.ndarray
    means: np.ndarray
    scales: np.ndarray
    condition_weights: np.ndarray

    def __post_init__(self):
        self.weights = np.asarray(self.weights, dtype=np.float64)
        self.means = np.asarray(self.means, dtype=np.float32)
        self.scales = np.asarray(self.scales, dtype=np.float32)
        self.condition_weights = np.asarray(self.condition_weights, dtype=np.float64)
        c, k, d = self.means.shape
        if self.weights.shape != (c, k) or self.scales.shape != (c, k, d) or self.condition_weights.shape != (c,):
            raise ModelError(f"Inconsistent latent prior arrays: weights {self.weights.shape}, means "
                             f"{self.means.shape}, scales {self.scales.shape}, conditions "
                             f"{self.condition_weights.shape}.")
        if not (np.all(np.isfinite(self.means)) and np.all(self.scales >= 0) and np.all(self.weights >= 0)):
            raise ModelError("The latent prior holds invalid numbers (non-finite means or negative scales/weights).")
        sums = self.weights.sum(axis=1)
        if np.any(sums <= 0):
            raise ModelError("A condition class of the latent prior has no components.")
        self.weights = self.weights / sums[:, None]
        self.condition_weights = self.condition_weights / self.condition_weights.sum()

    @property
    def n_conditions(self) -> int:
        return self.means.shape[0]

    @property
    def n_components(self) -> int:
        return self.means.shape[1]

    @property
    def latent_dim(self) -> int:
        return self.means.shape[2]

    def sample(self, count: int, rng: np.random.Generator, condition: int | None = None,
               temperature: float = 1.0) -> np.ndarray:
        """Latent vectors from the mixture.

        Parameters
        ----------
        count : int
            Number of vectors.
        rng : numpy.random.Generator
        condition : int, optional
            Condition class (0 … C-1); by default each vector's class is drawn by the
            training share of the classes.
        temperature : float
            Factor on every component's standard deviation (< 1: closer to the component
            means, more valid and less varied samples).

        Returns
        -------
        numpy.ndarray
            Shape ``(count, D)``, float64.
        """
        if condition is not None and not 0 <= condition < self.n_conditions:
            raise ModelError(f"The latent prior has condition classes 0-{self.n_conditions - 1}, not {condition}.")
        if condition is None:
            conditions = rng.choice(self.n_conditions, size=count, p=self.condition_weights)
        else:
            conditions = np.full(count, condition)
        components = np.empty(count, dtype=np.int64)
        for c in np.unique(conditions):
            rows = np.flatnonzero(conditions == c)
            components[rows] = rng.choice(self.n_components, size=len(rows), p=self.weights[c])
        noise = rng.standard_normal((count, self.latent_dim))
        return (self.means[conditions, components].astype(np.float64)
                + temperature * self.scales[conditions, components] * noise)

    # -- storage ------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the mixture as an ``.npz`` (no pickles; float16 means and scales)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, format=np.array(PRIOR_FORMAT), weights=self.weights.astype(np.float32),
                            means=self.means.astype(np.float16), scales=self.scales.astype(np.float16),
                            condition_weights=self.condition_weights.astype(np.float32))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "LatentPrior":
        """Read a mixture written by :meth:`save`; ModelError if it cannot be used."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"]) != PRIOR_FORMAT:
                    raise ModelError(f"The latent prior {path} has format {int(data['format'])}; this version "
                                     f"reads format {PRIOR_FORMAT}.")
                return cls(weights=data["weights"], means=data["means"].astype(np.float32),
                           scales=data["scales"].astype(np.float32), condition_weights=data["condition_weights"])
        except (OSError, KeyError, ValueError) as error:
            raise ModelError(f"The latent prior {path} cannot be read: {error}") from error


def load_prior(model_name: str, folder: Path | None = None, latent_dim: int | None = None) -> LatentPrior | None:
    """The model's shipped latent prior verified against the manifest, or None if none ships.

    Parameters
    ----------
    latent_dim : int, optional
        The model's latent size; a prior of another size is refused (ModelError).
    """
    from app.engine.core.registry import load_manifest, verified_weights_path

    name = prior_name(model_name)
    manifest = load_manifest(folder)
    if name not in manifest:
        return None
    # A prior is a distribution over one encoder's latent space: after retraining it is meaningless.
    fitted_on = manifest[name].get("architecture", {}).get("model_sha256")
    model_sha = manifest.get(model_name, {}).get("sha256")
    if fitted_on is None or fitted_on != model_sha:
        logger.warning("The latent prior %s was fitted on other %s weights; random samples use N(0, I) "
                       "until it is refitted (crystal-designer train prior --model %s).",
                       name, model_name, model_name)
        return None
    path, _ = verified_weights_path(name, folder)
    prior = LatentPrior.load(path)
    if latent_dim is not None and prior.latent_dim != latent_dim:
        raise ModelError(f"The latent prior {path.name} has {prior.latent_dim} dimensions; its model has {latent_dim}.")
    return prior
