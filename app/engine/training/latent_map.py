"""The latent map (ICSG3D paper, Fig. 3): a 2-D PCA projection of the generator's training cells.

Every cell of the generator's training set (cubic ICSG3D-class cells, see ``generator_data``) is
encoded by the shipped ``density_vae`` encoder into its latent mean μ, conditioned on the decile of
its predicted formation energy as during training. A principal component analysis fitted on the
training cells (not the validation cells) projects μ to two dimensions; the projection, the
formation energy of each cell (predicted by the shipped CGCNN model, the value the generator
conditions on), its structure class and split are saved as ``models/latent_map.npz`` with a
manifest entry and a card. The window draws it and projects a base and its candidates onto it
with the same PCA (``app.engine.generation.latent_map``).

Rebuild after retraining ``density_vae``: ``crystal-designer train latent-map``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from app.engine.core.cancel import CancelToken
from app.engine.core.paths import models_dir
from app.engine.core.registry import save_manifest_entry, sha256_of, verified_weights_path
from app.engine.generation.latent_map import LATENT_MAP_FILE, LATENT_MAP_NAME, STRUCTURE_CLASSES

logger = logging.getLogger(__name__)

#: Cells per encoder batch (32³ maps; ~50 MB of input per batch).
ENCODE_BATCH = 16


def encode_training_cells(dataset, rows: np.ndarray, energies: np.ndarray, vae, decile_edges: np.ndarray,
                          progress=None, cancel: CancelToken | None = None) -> np.ndarray:
    """Latent means μ of some training cells, shape ``(len(rows), latent)``, float32.

    Each cell is encoded with the condition of its predicted formation energy's decile
    (``energies``, eV/atom, one per cell of ``dataset``), as the VAE saw it in training.
    """
    import torch

    from app.engine.generation.voxel_models import one_hot_condition
    from app.engine.training.train_generator import coordinate_grid_batch

    lookup = np.zeros(256, dtype=np.int64)
    lookup[list(vae.config.species)] = np.arange(1, len(vae.config.species) + 1)
    deciles = np.searchsorted(decile_edges, energies)
    out = np.empty((len(rows), vae.config.latent_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(rows), ENCODE_BATCH):
            if cancel is not None:
                cancel.raise_if_cancelled()
            batch = rows[start:start + ENCODE_BATCH]
            coords = torch.from_numpy(coordinate_grid_batch(dataset, batch))
            inputs, _ = _inputs(dataset, batch, coords, lookup)
            condition = one_hot_condition(torch.from_numpy(deciles[batch]), vae.config.n_conditions)
            mu, _ = vae.encode(inputs, condition)
            out[start:start + len(batch)] = mu.float().numpy()
            if progress is not None:
                progress(min(start + ENCODE_BATCH, len(rows)), len(rows), "encoding training cells")
    return out


def _inputs(dataset, rows: np.ndarray, coords, lookup: np.ndarray):
    """Encoder input of ``rows`` (``vae_batch`` indexes its coordinate tensor by row, here per batch)."""
    import torch

    from app.engine.generation.density import density_channel, species_features

    density = np.stack([density_channel(dataset.density[row]) for row in rows])
    species = np.stack([dataset.species[row] for row in rows])
    inputs = torch.cat([torch.from_numpy(density)[:, None], coords,
                        torch.from_numpy(species_features(species))], dim=1)
    return inputs, torch.from_numpy(lookup[species])


def fit_pca(latents: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal axes of ``latents`` (shape ``(n, latent)``).

    Returns
    -------
    mean : ndarray, shape (latent,)
    components : ndarray, shape (n_components, latent)
        Unit principal axes, largest variance first; each axis's sign is fixed so that its
        largest-magnitude loading is positive (the map does not flip between rebuilds).
    explained : ndarray, shape (n_components,)
        Fraction of the total variance along each axis.
    """
    mean = latents.mean(axis=0)
    centred = latents - mean
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    components = axes[:n_components]
    signs = np.sign(components[np.arange(n_components), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    variance = singular ** 2
    return mean, components, variance[:n_components] / variance.sum()


def build_latent_map(output_dir: Path | None = None, progress=None, cancel: CancelToken | None = None) -> dict:
    """Encode the generator's training cells, fit the PCA and write ``latent_map.npz`` + entry + card.

    Returns
    -------
    dict
        The manifest entry written.
    """
    from app.engine.core.registry import load_model
    import app.engine.generation.voxel_models  # noqa: F401  (registers the density_vae kind)
    from app.engine.training.generator_data import composition_class, load_voxel_dataset
    from app.engine.training.train_generator import VAE_NAME, formation_energy_conditions, split

    from pymatgen.core import Structure

    output_dir = output_dir or models_dir()
    started = time.perf_counter()
    dataset = load_voxel_dataset()
    train_rows, val_rows = split(dataset)
    rows = np.arange(len(dataset))
    logger.info("latent map: %d cells (%d training, %d validation)", len(rows), len(train_rows), len(val_rows))
    energies = formation_energy_conditions(dataset, rows, output_dir).astype(np.float32)
    vae, vae_entry = load_model(VAE_NAME, output_dir)
    vae = vae.eval()
    edges = np.asarray(vae_entry["architecture"]["decile_edges_eV_per_atom"], dtype=np.float64)
    latents = encode_training_cells(dataset, rows, energies, vae, edges, progress=progress, cancel=cancel)
    validation = np.zeros(len(rows), dtype=bool)
    validation[val_rows] = True
    mean, components, explained = fit_pca(latents[~validation])
    points = ((latents - mean) @ components.T).astype(np.float32)
    classes = np.array([STRUCTURE_CLASSES.index(composition_class(Structure.from_dict(s)) or "other")
                        if dataset.sources[i] != "perov_5" else STRUCTURE_CLASSES.index("ABX3 perovskite")
                        for i, s in enumerate(dataset.structures)], dtype=np.uint8)
    vae_path, _ = verified_weights_path(VAE_NAME, output_dir)
    path = output_dir / LATENT_MAP_FILE
    np.savez_compressed(path, points=points, formation_energy=energies, validation=validation,
                        structure_class=classes, pca_mean=mean.astype(np.float64),
                        pca_components=components.astype(np.float64), explained_variance=explained,
                        class_names=np.array(STRUCTURE_CLASSES), vae_sha256=np.array(sha256_of(vae_path)))
    # How well the 2-D map orders the cells by energy: the rank correlation of each axis with Ef.
    correlations = [float(_spearman(points[:, axis], energies)) for axis in range(2)]
    entry = {
        "file": LATENT_MAP_FILE, "sha256": sha256_of(path), "kind": LATENT_MAP_NAME,
        "description": "2-D PCA projection of the density_vae latent means of the generator's training cells, "
                       "with their predicted formation energies (the window's latent map)",
        "architecture": {"method": "PCA (numpy SVD) of the encoder's latent mean mu, fitted on the training cells",
                         "latent_dim": int(latents.shape[1]), "components": 2,
                         "encoder": f"{VAE_NAME} sha256 {sha256_of(vae_path)[:12]}",
                         "condition": "decile of the predicted formation energy (as in training)"},
        "units": {"points": "latent units (PCA axes)", "formation_energy": "eV/atom (predicted by formation_energy)"},
        "data": {"dataset": vae_entry["data"]["dataset"], "cells": int(len(rows))},
        "split": {"method": vae_entry["split"]["method"], "train_count": int(len(train_rows)),
                  "validation_count": int(len(val_rows)), "note": "PCA fitted on the training cells only"},
        "metrics": {"explained_variance_pc1": float(explained[0]), "explained_variance_pc2": float(explained[1]),
                    "spearman_pc1_formation_energy": correlations[0],
                    "spearman_pc2_formation_energy": correlations[1],
                    "build_seconds": round(time.perf_counter() - started, 1)},
        "reproduce": ["crystal-designer train latent-map"],
        "card": f"{LATENT_MAP_NAME}.md", "created": time.strftime("%Y-%m-%d"),
    }
    save_manifest_entry(LATENT_MAP_NAME, entry, output_dir)
    _write_card(entry, output_dir, classes)
    return entry


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rank_x = np.argsort(np.argsort(x)).astype(np.float64)
    rank_y = np.argsort(np.argsort(y)).astype(np.float64)
    return float(np.corrcoef(rank_x, rank_y)[0, 1])


def _write_card(entry: dict, output_dir: Path, classes: np.ndarray) -> None:
    metrics = entry["metrics"]
    counts = "\n".join(f"| {name} | {int((classes == i).sum())} |" for i, name in enumerate(STRUCTURE_CLASSES)
                       if (classes == i).any())
    (output_dir / entry["card"]).write_text(f"""# {LATENT_MAP_NAME}

The latent map of the ICSG3D paper's Fig. 3: each training cell of the generator (cubic
ICSG3D-class cells of mp_eform_gap and perov_5, conventional, ≤ 40 sites) encoded by the shipped
`density_vae` encoder into its latent mean μ ({entry['architecture']['latent_dim']} dimensions,
conditioned on the decile of its predicted formation energy as in training) and projected onto
the two principal axes of the training cells' μ (PCA by numpy's SVD; no extra dependency). Not a
model: nothing is learnt beyond the PCA axes.

`latent_map.npz` holds the 2-D points, each cell's formation energy predicted by the shipped
CGCNN `formation_energy` model (eV/atom; the value the generator conditions on, so perov_5 cells
without an MP label are on the same scale), its structure class, whether it is a validation cell,
the PCA mean and axes (to project a base and its candidates the same way) and the sha256 of the
encoder it was computed with (the window warns when `density_vae` has changed since).
No structures or identifiers of the training data are stored.

{entry['data']['cells']} cells ({entry['split']['train_count']} training, {entry['split']['validation_count']}
validation; split {entry['split']['method']}).

| structure class | cells |
|---|---|
{counts}

| metric | value |
|---|---|
| variance along PC1 | {metrics['explained_variance_pc1']:.3f} |
| variance along PC2 | {metrics['explained_variance_pc2']:.3f} |
| Spearman ρ of PC1 with formation energy | {metrics['spearman_pc1_formation_energy']:.3f} |
| Spearman ρ of PC2 with formation energy | {metrics['spearman_pc2_formation_energy']:.3f} |
| build time (2 shared CPU cores) | {metrics['build_seconds']:.0f} s |

Data: Materials Project (CC-BY-4.0) and perov_5 (Castelli et al., CDVAE split).

Rebuild (after retraining `density_vae`): `crystal-designer train latent-map`.
""")
