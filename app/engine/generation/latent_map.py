"""The shipped latent map: the generator's training cells on the two principal axes of its latent space.

Built by ``crystal-designer train latent-map`` (``app.engine.training.latent_map``) and shipped as
``models/latent_map.npz``; loading it is numpy only. :meth:`LatentMap.project` puts any latent
vectors (a base's μ, the candidates' z) on the same axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.engine.core.errors import ModelError

LATENT_MAP_NAME = "latent_map"
LATENT_MAP_FILE = "latent_map.npz"
#: Structure classes of the cells (index stored per cell); "other" for none of the ICSG3D families.
STRUCTURE_CLASSES = ("AB binary", "ABX3 perovskite", "X2YZ Heusler", "XYZ half-Heusler", "other")


@dataclass
class LatentMap:
    """Projected training cells and the projection.

    Attributes
    ----------
    points : ndarray, shape (n, 2)
        PCA coordinates of each cell's latent mean (latent units).
    formation_energy : ndarray, shape (n,)
        Predicted formation energy per atom of each cell (eV/atom).
    validation : ndarray, shape (n,), bool
        Validation cells (not used to fit the axes).
    structure_class : ndarray, shape (n,), int
        Index into ``class_names``.
    mean : ndarray, shape (latent,)
    components : ndarray, shape (2, latent)
    explained_variance : ndarray, shape (2,)
        Fraction of the training cells' latent variance along each axis.
    encoder_sha256 : str
        The ``density_vae`` weights the map was computed with.
    """

    points: np.ndarray
    formation_energy: np.ndarray
    validation: np.ndarray
    structure_class: np.ndarray
    class_names: tuple[str, ...]
    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    encoder_sha256: str

    @classmethod
    def load(cls, folder: Path | None = None) -> "LatentMap":
        """The map in ``folder`` (default: the shipped models), verified against the manifest.

        Raises
        ------
        ModelError
            When the file is missing, does not match its manifest entry, or cannot be read.
        """
        from app.engine.core.registry import verified_weights_path

        path, _ = verified_weights_path(LATENT_MAP_NAME, folder)
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(points=data["points"].astype(np.float64),
                           formation_energy=data["formation_energy"].astype(np.float64),
                           validation=data["validation"].astype(bool),
                           structure_class=data["structure_class"].astype(np.int64),
                           class_names=tuple(str(x) for x in data["class_names"]),
                           mean=data["pca_mean"], components=data["pca_components"],
                           explained_variance=data["explained_variance"], encoder_sha256=str(data["vae_sha256"]))
        except (OSError, KeyError, ValueError) as error:
            raise ModelError(f"The latent map {path.name} cannot be read: {error}") from error

    def project(self, latents) -> np.ndarray:
        """PCA coordinates of latent vectors, shape ``(n, 2)`` for input ``(n, latent)``.

        Raises
        ------
        ModelError
            When the vectors' length is not the map's latent size.
        """
        latents = np.atleast_2d(np.asarray(latents, dtype=np.float64))
        if latents.shape[1] != self.mean.shape[0]:
            raise ModelError(f"Latent vectors of length {latents.shape[1]} do not fit the latent map "
                             f"({self.mean.shape[0]} dimensions).")
        return (latents - self.mean) @ self.components.T
