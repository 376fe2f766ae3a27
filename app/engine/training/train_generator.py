"""Training of the generator's networks: the segmentation UNet first, then the conditional
DFC-VAE that uses the frozen UNet's hidden layers as its perceptual loss (paper Methods).

Both runs checkpoint after every epoch and resume when rerun; the best validation epoch is
written to ``models/`` with its manifest entry and model card.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from app.engine.core.cancel import CancelToken
from app.engine.generation.density import (BOX_SPAN, COORD_SCALE, GRID, apply_cube_operation, coordinate_grid,
                                           density_channel, random_cube_operation, species_features, voxel_size)
from app.engine.core.paths import models_dir
from app.engine.training import checkpoints
from app.engine.training.loop import fit_epochs
from app.engine.core.registry import load_model, save_manifest_entry, sha256_of
from app.engine.training.datasets import is_validation
from app.engine.training.generator_data import VoxelDataset, load_voxel_dataset
from app.engine.generation.voxel_models import (ConditionalVAE3D, UNet3D, UNetConfig, VAEConfig, block_majority, kl_divergence,
                                     one_hot_condition)

logger = logging.getLogger(__name__)

UNET_NAME = "segmentation_unet"
#: Voxel edge lengths (Å) are divided by this in the UNet's second channel (typical 0.2-0.6 Å).
VOXEL_SIZE_SCALE = 0.5
VAE_NAME = "density_vae"


def lattice_lengths(dataset: VoxelDataset, rows=None) -> np.ndarray:
    """Cubic cell length a (Å) of each cell, shape ``(n,)``."""
    rows = range(len(dataset)) if rows is None else rows
    return np.array([dataset.structures[r]["lattice"]["a"] for r in rows], dtype=np.float32)


def split(dataset: VoxelDataset) -> tuple[np.ndarray, np.ndarray]:
    validation = np.array([is_validation(str(i)) for i in dataset.ids])
    return np.flatnonzero(~validation), np.flatnonzero(validation)


def _random_cube_operation(rng: np.random.Generator, *arrays: np.ndarray) -> list[np.ndarray]:
    """The same random operation of the cube (one of 48, see ``density``) applied to every (…, G, G, G) array."""
    axes, flips = random_cube_operation(rng)
    return [apply_cube_operation(array, axes, flips) for array in arrays]


# ---------------------------------------------------------------------------------------------
# UNet
# ---------------------------------------------------------------------------------------------

def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse voxel frequency per class, background 0 (the paper's weights, here actually used)."""
    counts = np.bincount(labels.ravel(), minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    weights[0] = 0.0
    weights *= (n_classes - 1) / max(weights.sum(), 1e-12)
    return weights.astype(np.float32)


def unet_input(density: torch.Tensor, voxel_size: torch.Tensor) -> torch.Tensor:
    """UNet input: density channel plus a constant voxel-size channel.

    An atom's blob width in voxels depends on the cell size, so the UNet is told the voxel
    edge length (Å, divided by ``VOXEL_SIZE_SCALE``) to read the ionic radius, and with it
    the species. A constant channel, unlike raw coordinates, is the same in every crop.

    Parameters
    ----------
    density : torch.Tensor
        Shape ``(batch, D, H, W)``, model units.
    voxel_size : torch.Tensor
        Shape ``(batch,)``, Å.
    """
    size = (voxel_size / VOXEL_SIZE_SCALE).to(density.dtype)[:, None, None, None].expand_as(density)
    return torch.stack([density, size], dim=1)


def _unet_loss(model: UNet3D, density: torch.Tensor, voxel_size: torch.Tensor, labels: torch.Tensor,
               weights: torch.Tensor):
    species_logits, mask_logits = model(unet_input(density, voxel_size))
    occupied = labels > 0
    ce = F.cross_entropy(species_logits, labels, weight=weights, reduction="sum") / (
        weights[labels].sum().clamp(min=1e-6))
    bce = F.binary_cross_entropy_with_logits(mask_logits, occupied.float())
    return ce + bce, species_logits, mask_logits


def segment_labels(model: UNet3D, density_channel_batch: torch.Tensor, voxel_size: torch.Tensor) -> torch.Tensor:
    """Atomic-number map from the UNet: occupied voxels take the most likely element.

    Parameters
    ----------
    density_channel_batch : torch.Tensor
        Shape ``(batch, G, G, G)``, model units.
    voxel_size : torch.Tensor
        Shape ``(batch,)``, Å.

    Returns
    -------
    torch.Tensor
        Shape ``(batch, G, G, G)``, int64 atomic numbers (0 = empty).
    """
    species_logits, mask_logits = model(unet_input(density_channel_batch, voxel_size))
    species_logits[:, 0] = -torch.inf  # occupancy comes from the mask head
    vocab = torch.tensor([0] + list(model.config.species), device=species_logits.device)
    labels = vocab[species_logits.argmax(dim=1)]
    return torch.where(mask_logits > 0, labels, torch.zeros_like(labels))


def train_unet(epochs: int = 12, batch_size: int = 16, crop: int = 16, learning_rate: float = 2e-3,
               output_dir: Path | None = None, cancel: CancelToken | None = None, fresh: bool = False) -> dict:
    """Train the segmentation UNet on random crops of true maps (segmentation is local)."""
    output_dir = output_dir or models_dir()
    torch.manual_seed(0)
    dataset = load_voxel_dataset()
    train_rows, val_rows = split(dataset)
    vocabulary = sorted(int(z) for z in np.unique(dataset.species) if z > 0)
    lookup = np.zeros(256, dtype=np.int64)
    lookup[vocabulary] = np.arange(1, len(vocabulary) + 1)
    config = UNetConfig(species=vocabulary, in_channels=2)
    sizes = voxel_size(lattice_lengths(dataset))
    model = UNet3D(config)
    weights = torch.from_numpy(class_weights(lookup[dataset.species[train_rows[:2000]]], model.n_classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    steps = math.ceil(len(train_rows) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=epochs * steps, pct_start=0.1)

    def step(rows, rng):
        density, labels = [], []
        for row in rows:
            d, s = _random_cube_operation(rng, dataset.density[row], dataset.species[row])
            i, j, k = rng.integers(0, GRID - crop + 1, size=3)
            density.append(density_channel(d[i:i + crop, j:j + crop, k:k + crop]))
            labels.append(lookup[s[i:i + crop, j:j + crop, k:k + crop]])
        loss, _, _ = _unet_loss(model, torch.from_numpy(np.stack(density)), torch.from_numpy(sizes[rows]),
                                torch.from_numpy(np.stack(labels)), weights)
        return loss, {"loss": loss.item()}

    def evaluate_epoch():
        metrics = evaluate_unet(model, dataset, val_rows[:500])
        return 1.0 - metrics["site_voxel_accuracy"], metrics

    state = fit_epochs(UNET_NAME, config.to_dict(), epochs, model, optimizer, scheduler, train_rows, batch_size,
                       step, evaluate_epoch, fresh=fresh, cancel=cancel)
    metrics = evaluate_unet(model, dataset, val_rows)
    return _write(UNET_NAME, model, config.to_dict(), metrics, epochs, state["best"]["epoch"], len(train_rows),
                  len(val_rows), output_dir,
                  description="3-D UNet segmenting density maps into atomic species (ICSG3D eq. 6-7)",
                  training={"crop": crop, "batch_size": batch_size, "learning_rate": learning_rate,
                            "loss": "class-weighted cross-entropy (1/frequency, background 0) + mask BCE"})


@torch.no_grad()
def evaluate_unet(model: UNet3D, dataset: VoxelDataset, rows: np.ndarray, batch_size: int = 8) -> dict:
    """Voxel metrics on whole validation maps: occupancy IoU and species accuracy on atom voxels."""
    model.eval()
    correct = total = intersection = union = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        density = torch.from_numpy(density_channel(dataset.density[chunk]))
        truth = torch.from_numpy(dataset.species[chunk].astype(np.int64))
        predicted = segment_labels(model, density, torch.from_numpy(voxel_size(lattice_lengths(dataset, chunk))))
        occupied = truth > 0
        correct += int((predicted[occupied] == truth[occupied]).sum())
        total += int(occupied.sum())
        intersection += int(((predicted > 0) & occupied).sum())
        union += int(((predicted > 0) | occupied).sum())
    return {"site_voxel_accuracy": correct / max(total, 1), "occupancy_iou": intersection / max(union, 1)}


# ---------------------------------------------------------------------------------------------
# Conditional DFC-VAE
# ---------------------------------------------------------------------------------------------

def formation_energy_conditions(dataset: VoxelDataset, rows: np.ndarray, folder: Path | None = None) -> np.ndarray:
    """Predicted formation energy per atom (eV/atom) of each cell, by the shipped model.

    The generator conditions on the predictor's value, not a DFT label, so training cells from
    sets without labels (perov_5) and user structures at generation time are treated alike.
    """
    from pymatgen.core import Structure

    from app.engine.properties.cgcnn import batch_to_tensors
    from app.engine.properties.graph import collate
    from app.engine.properties.predictor import graph_for_prediction

    model, _ = load_model("formation_energy", folder)
    out = []
    with torch.inference_mode():
        for start in range(0, len(rows), 256):
            graphs = [graph_for_prediction(Structure.from_dict(dataset.structures[i])) for i in rows[start:start + 256]]
            out.append(model.predict(batch_to_tensors(collate(graphs)))[:, 0].numpy())
    return np.concatenate(out)


def species_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Cross-entropy weights of the VAE's species head: 1 / sqrt(voxel frequency), background
    included, scaled so the average voxel weighs 1.

    Inverse frequency (the UNet's weights) would make the rarest element of the set weigh
    ~10⁴ × a common one; the square root still lifts rare elements while keeping the loss
    stable.
    """
    counts = np.bincount(labels.ravel(), minlength=n_classes).astype(np.float64)
    frequency = counts / max(counts.sum(), 1.0)
    weights = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(frequency, 1e-12)), 0.0)
    weights /= max(float((frequency * weights).sum()), 1e-12)
    return weights.astype(np.float32)


def lattice_from_coords_torch(coords: torch.Tensor) -> torch.Tensor:
    """Differentiable twin of :func:`app.engine.generation.density.lattice_from_coords`.

    Parameters
    ----------
    coords : torch.Tensor
        Shape ``(batch, 3, G, G, G)``, model units (Å / COORD_SCALE).

    Returns
    -------
    torch.Tensor
        Shape ``(batch, 3)``, Å: least-squares slope of each channel along its own axis.
    """
    grid = coords.shape[-1]
    k = torch.arange(grid, dtype=coords.dtype, device=coords.device)
    k = k - k.mean()
    lengths = []
    for axis in range(3):
        other = tuple(2 + a for a in range(3) if a != axis)
        profile = coords[:, axis].mean(dim=tuple(a - 1 for a in other))
        slope = ((profile - profile.mean(dim=1, keepdim=True)) * k).sum(dim=1) / (k * k).sum()
        lengths.append(slope * COORD_SCALE * grid / BOX_SPAN)
    return torch.stack(lengths, dim=1)


def vae_batch(dataset: VoxelDataset, rows: np.ndarray, coords: torch.Tensor, lookup: np.ndarray,
              rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder input and species-class targets of some cells.

    Parameters
    ----------
    rows : numpy.ndarray
        Cell indices.
    coords : torch.Tensor
        Coordinate channels of every cell, ``(n_cells, 3, G, G, G)``.
    lookup : numpy.ndarray
        Atomic number → species class.
    rng : numpy.random.Generator, optional
        If given, each cell is turned by a random 90° rotation (cubic cells: the coordinate
        ramps are unchanged, density and species turn together).

    Returns
    -------
    inputs : torch.Tensor
        ``(batch, 4 + N_SPECIES_FEATURES, G, G, G)``: density channel, coordinates, species features.
    classes : torch.Tensor
        ``(batch, G, G, G)``, int64 species classes (0 = background).
    """
    density, species = [], []
    for row in rows:
        d, s = dataset.density[row], dataset.species[row]
        if rng is not None:
            d, s = _random_cube_operation(rng, d, s)
        density.append(density_channel(d))
        species.append(s)
    species = np.stack(species)
    inputs = torch.cat([torch.from_numpy(np.stack(density))[:, None], coords[rows],
                        torch.from_numpy(species_features(species))], dim=1)
    return inputs, torch.from_numpy(lookup[species])


def train_vae(epochs: int = 30, batch_size: int = 16, learning_rate: float = 1e-3, alpha: float = 1.0,
              beta: float = 1e-3, species_weight: float = 1.0, lattice_weight: float = 1.0,
              perceptual_crop: int = 16, output_dir: Path | None = None, cancel: CancelToken | None = None,
              fresh: bool = False, continue_shipped: bool = False) -> dict:
    """Train the conditional DFC-VAE with a species head; the frozen shipped UNet gives the
    perceptual loss.

    With ``continue_shipped`` the run starts from the shipped ``density_vae`` weights (same
    architecture required) with a new learning-rate cycle of ``epochs`` epochs; the manifest
    then records both stages and their total epochs.

    Loss per batch: MSE of the density and coordinate channels + ``lattice_weight`` × squared
    error (Å²) of the cell lengths read from the decoded coordinate channels +
    ``species_weight`` × weighted cross-entropy of the species head + ``beta`` × KL divergence
    + ``alpha`` × perceptual MSE over the UNet's hidden layers on a random crop.
    """
    output_dir = output_dir or models_dir()
    torch.manual_seed(0)
    dataset = load_voxel_dataset()
    train_rows, val_rows = split(dataset)
    energies = formation_energy_conditions(dataset, np.arange(len(dataset)), output_dir)
    edges = np.quantile(energies[train_rows], np.linspace(0, 1, 11)[1:-1])
    deciles = np.searchsorted(edges, energies)

    unet, _ = load_model(UNET_NAME, output_dir)
    unet.requires_grad_(False)

    vocabulary = sorted(int(z) for z in np.unique(dataset.species) if z > 0)
    lookup = np.zeros(256, dtype=np.int64)
    lookup[vocabulary] = np.arange(1, len(vocabulary) + 1)
    config = VAEConfig(species=vocabulary)
    model = ConditionalVAE3D(config)
    run_name, earlier_stages, earlier_epochs = VAE_NAME, [], 0
    command = (f"crystal-designer train {VAE_NAME}{' --continue' if continue_shipped else ''} --epochs {epochs} "
               f"--learning-rate {learning_rate:g} --species-weight {species_weight:g}")
    reproduce = [command]
    if continue_shipped:
        shipped_entry = checkpoints.load_shipped_weights(VAE_NAME, model, output_dir)
        run_name = f"{VAE_NAME}.continued"
        earlier_stages = shipped_entry["training"].get("stages", [shipped_entry["training"]])
        earlier_epochs = int(shipped_entry["epochs"])
        reproduce = shipped_entry.get("reproduce", [f"crystal-designer train {VAE_NAME}"]) + [command]
    class_weight = torch.from_numpy(species_class_weights(lookup[dataset.species[train_rows[:2000]]],
                                                          config.n_species_classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    steps = math.ceil(len(train_rows) / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=epochs * steps, pct_start=0.1)
    coords = torch.from_numpy(coordinate_grid_batch(dataset, np.arange(len(dataset))))
    lengths = torch.from_numpy(lattice_lengths(dataset))
    sizes = voxel_size(lattice_lengths(dataset))

    def step(rows, rng):
        inputs, classes = vae_batch(dataset, rows, coords, lookup, rng)
        maps = inputs[:, :config.channels]
        recon, logits, mu, logvar = model(inputs, one_hot_condition(torch.from_numpy(deciles[rows])))
        parts = {"mse": F.mse_loss(recon, maps),
                 "lattice_mse": F.mse_loss(lattice_from_coords_torch(recon[:, 1:4]),
                                           lengths[rows][:, None].expand(-1, 3)),
                 "species_ce": F.cross_entropy(logits, block_majority(classes), weight=class_weight),
                 "kld": kl_divergence(mu, logvar)}
        # Deep-feature consistency on one random crop per batch: the UNet is local, and a
        # 16³ crop costs 1/8 of the whole map on the CPU.
        size = torch.from_numpy(sizes[rows])
        i, j, k = rng.integers(0, GRID - perceptual_crop + 1, size=3)
        window = (slice(None), 0, slice(i, i + perceptual_crop), slice(j, j + perceptual_crop),
                  slice(k, k + perceptual_crop))
        parts["perceptual"] = sum(F.mse_loss(a, b) for a, b in zip(unet.features(unet_input(recon[window], size)),
                                                                   unet.features(unet_input(maps[window], size))))
        loss = (parts["mse"] + lattice_weight * parts["lattice_mse"] + species_weight * parts["species_ce"]
                + beta * parts["kld"] + alpha * parts["perceptual"])
        return loss, {key: float(value.detach()) for key, value in parts.items()}

    def evaluate_epoch():
        metrics = evaluate_vae(model, dataset, val_rows[:400], coords, deciles, lookup)
        return metrics["validation_mse"] + metrics["lattice_mae_angstrom"] + (1.0 - metrics["species_block_accuracy"]), metrics

    state = fit_epochs(run_name, config.to_dict(), epochs, model, optimizer, scheduler, train_rows, batch_size,
                       step, evaluate_epoch, seed=1000 * continue_shipped, fresh=fresh, cancel=cancel)
    metrics = evaluate_vae(model, dataset, val_rows, coords, deciles, lookup)
    architecture = {**config.to_dict(), "decile_edges_eV_per_atom": [float(e) for e in edges]}
    stage = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "alpha": alpha,
             "beta": beta, "species_weight": species_weight, "lattice_weight": lattice_weight,
             "perceptual_crop": perceptual_crop, "best_epoch": state["best"]["epoch"],
             "started_from": "shipped density_vae weights" if continue_shipped else "random initialisation"}
    return _write(VAE_NAME, model, architecture, metrics, earlier_epochs + epochs,
                  earlier_epochs + state["best"]["epoch"], len(train_rows),
                  len(val_rows), output_dir,
                  description="Conditional deep-feature-consistent VAE over 32³ density + coordinate maps, "
                              "with a species head",
                  training={"stages": earlier_stages + [stage],
                            "species_loss": "cross-entropy weighted by 1/sqrt(voxel frequency)",
                            "condition": "decile of predicted formation energy per atom"},
                  reproduce=reproduce)


def coordinate_grid_batch(dataset: VoxelDataset, rows: np.ndarray) -> np.ndarray:
    """Coordinate channels (model units) of each cell, shape ``(n, 3, G, G, G)``, float32."""
    out = np.empty((len(rows), 3, GRID, GRID, GRID), dtype=np.float32)
    for n, row in enumerate(rows):
        abc = dataset.structures[row]["lattice"]
        out[n] = coordinate_grid([abc["a"], abc["b"], abc["c"]], GRID) / COORD_SCALE
    return out


@torch.no_grad()
def evaluate_vae(model, dataset: VoxelDataset, rows: np.ndarray, coords: torch.Tensor, deciles: np.ndarray,
                 lookup: np.ndarray, batch_size: int = 16) -> dict:
    """Reconstruction metrics of the VAE (z = μ) on whole validation maps.

    Returns map MSE (model units), lattice MAE (Å, from the decoded coordinate channels),
    species accuracy on the 2×2×2 blocks of atoms and occupancy IoU of the species head (block
    majority classes, the head's own resolution).
    """
    model.eval()
    mse = lattice = 0.0
    correct = total = intersection = union = 0
    lengths = lattice_lengths(dataset)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        inputs, classes = vae_batch(dataset, chunk, coords, lookup)
        maps = inputs[:, :model.config.channels]
        recon, logits, _, _ = model(inputs, one_hot_condition(torch.from_numpy(deciles[chunk])))
        mse += F.mse_loss(recon, maps, reduction="sum").item() / maps[0].numel()
        lattice += (lattice_from_coords_torch(recon[:, 1:4]) - torch.from_numpy(lengths[chunk])[:, None]).abs().mean(1).sum().item()
        predicted = logits.argmax(dim=1)
        classes = block_majority(classes)
        occupied = classes > 0
        correct += int((predicted[occupied] == classes[occupied]).sum())
        total += int(occupied.sum())
        intersection += int(((predicted > 0) & occupied).sum())
        union += int(((predicted > 0) | occupied).sum())
    n = max(len(rows), 1)
    return {"validation_mse": mse / n, "lattice_mae_angstrom": lattice / n,
            "species_block_accuracy": correct / max(total, 1), "occupancy_iou": intersection / max(union, 1)}


UNET_ROLE_NOTES = """## Role in the generator
The generator no longer segments decoded maps with this UNet: the VAE's own species head labels
them (see the `density_vae` card: on true maps of validation perovskites, this UNet's labels gave
0 % structure matches). The UNet is trained first and frozen, and its contracting path gives
the VAE's deep-feature-consistency (perceptual) loss, as in the paper.
"""

VAE_RECIPE_NOTES = """## Changes to the paper's recipe, and why
- **Species head.** The decoder predicts each 2×2×2 block's species (background + the
  vocabulary) from its last hidden layer; generation segments these labels instead of running
  the paper's UNet on the decoded density. With σ = ionic radius, eq. 1's Gaussians overlap so
  much that large anions sit at density saddles and the density hardly tells elements apart:
  the UNet (see its card) labels 32 % of atom voxels with the right element and, on true maps
  of validation perovskites, gave 0 % structure matches (true labels: 100 %).
- **Encoder sees the elements.** Besides density and coordinates, the encoder reads four
  element descriptors per voxel (Z/100, period/7, group/18, electronegativity/4 inside each
  atom's sphere), so the latent code carries the species instead of guessing them from density.
- **Lattice loss.** The cell length is read from the decoded coordinate channels by the same
  least-squares slope the generator uses, and its squared error (Å²) is added to the loss; the
  plain channel MSE barely penalises a 5 % slope error.
- The UNet is still trained first and frozen, and still gives the perceptual (DFC) loss.
"""


def _write(name, model, architecture, metrics, epochs, best_epoch, n_train, n_val, output_dir: Path,
           description: str, training: dict, reproduce: list[str] | None = None) -> dict:
    output_dir.mkdir(parents=True, exist_ok=True)
    weights = output_dir / f"{name}.pt"
    torch.save(model.state_dict(), weights)
    entry = {
        "file": weights.name, "sha256": sha256_of(weights), "kind": name, "description": description,
        "architecture": architecture, "units": {"density_channel": "log1p(M [Z/Å³]) / 2", "coords": "Å / 10"},
        "data": {"dataset": "cubic ICSG3D-class cells of mp_eform_gap + perov_5 (conventional, ≤ 40 sites)"},
        "split": {"method": "sha256(material_id) mod 100 < 10 -> validation", "train_count": n_train,
                  "validation_count": n_val},
        "epochs": epochs, "best_epoch": best_epoch, "training": training, "metrics": metrics,
        "reproduce": reproduce or [f"crystal-designer train {name}"],
        "card": f"{name}.md", "created": time.strftime("%Y-%m-%d"),
    }
    save_manifest_entry(name, entry, output_dir)
    write_card(name, entry, output_dir)
    return entry


def _metric_rows(metrics: dict) -> str:
    return "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())


def _training_text(entry: dict) -> str:
    training = dict(entry["training"])
    stages = training.pop("stages", None)
    text = f"{entry['epochs']} epochs on 2 CPU cores (best validation epoch {entry['best_epoch']})"
    if not stages:
        return f"{text}; settings: `{training}`."
    lines = [f"{text}, in {len(stages)} learning-rate cycles (one-cycle schedule each):"]
    for number, stage in enumerate(stages, 1):
        settings = {k: v for k, v in stage.items() if k not in ("epochs", "best_epoch", "started_from")}
        lines.append(f"{number}. {stage.get('epochs', '?')} epochs from {stage.get('started_from', '?')}, "
                     f"best epoch {stage.get('best_epoch', '?')}; `{settings}`")
    return "\n".join(lines) + f"\n\nCommon settings: `{training}`."


def write_card(name: str, entry: dict, output_dir: Path) -> None:
    """Write ``models/<name>.md`` from the model's manifest entry."""
    notes = {UNET_NAME: UNET_ROLE_NOTES, VAE_NAME: VAE_RECIPE_NOTES}.get(name, "")
    reproduce = "\n".join(f"    {command}" for command in entry.get("reproduce", [f"crystal-designer train {name}"]))
    generator = entry.get("generator_metrics")
    generator_text = "" if not generator else f"""
## Generator-level metrics (validation cells)
Measured by `{generator['command']}` on {generator['date']}:

```json
{json.dumps(generator['report'], indent=2)}
```
"""
    (output_dir / f"{name}.md").write_text(f"""# Model card: {name}

{entry['description']} (ICSG3D, Court et al., J. Chem. Inf. Model. 2020), implemented and trained in this project.

## Model
Architecture arguments: `{entry['architecture']}`. Weights `{entry['file']}`, sha256 `{entry['sha256']}`.

## Data
{entry['data']['dataset']}. Sources: Materials Project legacy formation-energy set (CC-BY-4.0) and
perov_5 (Castelli et al., CDVAE split, MIT). {entry['split']['train_count']} training and
{entry['split']['validation_count']} validation cells, split by sha256 of the material id (10 % validation).
Cells encoded as 32³ density maps (eq. 1, σ = ionic radius of the likely oxidation state, periodic
images included).

## Training
{_training_text(entry)}

{notes}
## Validation metrics
| metric | value |
|---|---|
{_metric_rows(entry['metrics'])}
{generator_text}
Reproduce:

{reproduce}

Generator-level metrics: `crystal-designer evaluate generator`.

## Limits
Only cubic cells with ≤ 40 sites of the classes above; 32³ voxels limit the positional resolution
(0.19 Å per voxel for a 4 Å cell, 0.47 Å for 10 Å).
""")
