"""Model card of the PointNet property model, written from its manifest entry."""

from __future__ import annotations

import math


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "–"


def model_card(entry: dict, history: list[dict]) -> str:
    """Markdown card of the PointNet model from its manifest ``entry`` and the training ``history``."""
    arch = entry["architecture"]
    metrics = entry["metrics"]
    rows = "\n".join(
        f"| {t} | {entry['units'].get(t, '')} | {_fmt(mae)} | {metrics['validation_count'].get(t, '')} |"
        for t, mae in metrics["validation_mae"].items()
    )
    derived = "\n".join(f"- {k}: {_fmt(v)}" for k, v in metrics.get("derived", {}).items())
    by_source = "\n".join(
        f"- {source}: " + ", ".join(f"{t} {_fmt(v)}" for t, v in maes.items())
        for source, maes in metrics["validation_mae_by_source"].items()
    )
    sources = "\n".join(f"- {s}" for s in entry["data"]["sources"])
    training = entry["training"]
    pool_text = ("" if arch.get("pooling", "max") == "max" else
                 " beside a masked mean-pool (an addition to the seed: a maximum cannot count atoms, so with it "
                 "alone the stoichiometry would be invisible)")
    from app.engine.properties.point_cloud import (DISTANCE_CENTRES, DISTANCE_WIDTH, ENVIRONMENT_NEIGHBORS,
                                                   NEIGHBOR_DECAY, POINT_FEATURE_LENGTH)

    environment_text = ""
    if arch.get("point_features", POINT_FEATURE_LENGTH) > POINT_FEATURE_LENGTH:
        environment_text = (
            f", plus a description of its periodic surroundings (an addition to the seed): the distances to its "
            f"{ENVIRONMENT_NEIGHBORS} nearest periodic neighbours smeared over {len(DISTANCE_CENTRES)} Gaussians "
            f"({DISTANCE_CENTRES[0]:.1f}–{DISTANCE_CENTRES[-1]:.1f} Å, width {DISTANCE_WIDTH} Å) and the mean of "
            f"those neighbours' element features weighted by exp(−(d − d_nearest)/{NEIGHBOR_DECAY} Å). A single "
            "cell's coordinates leave out the atoms across the cell faces, which hold most of an atom's bonds; "
            "these per-atom values give them back without a graph network (each point is still processed alone "
            "until the pooling)")
    stages = training.get("stages") or []
    stage_text = "; ".join(f"stage {k + 1}: {st['epochs']} epochs at peak learning rate {st['learning_rate']}"
                           for k, st in enumerate(stages))
    recomputed = ""
    trained_on = metrics.get("trained_on_point_cloud_version")
    if trained_on is None and metrics.get("point_cloud_version", 1) >= 2 and not stages:
        recomputed = ("\n\nThe weights were trained on point clouds of an earlier construction (the cell reduced as "
                      "given, then oriented); the metrics below are recomputed "
                      f"(`{metrics.get('recomputed_by', 'crystal-designer evaluate pointnet --record')}`) on point "
                      "clouds of the current construction (oriented first, so the reduction cannot depend on the "
                      "input's rotation), which is what the app computes.")
    finished = entry["epochs_completed"] >= entry["epochs"]
    stopped = "" if finished else (
        f" **Training stopped after {entry['epochs_completed']} of {entry['epochs']} planned epochs**; "
        "these are the weights of the best epoch so far.")
    return f"""# Model card: pointnet

{entry['description']}

## Model
PointNet (Qi et al., CVPR 2017) applied to crystals as in Okuno et al. (the seed paper), implemented in
this project. Each atom of the standardised cell is one point: its Cartesian coordinates (Å) plus the
91-long CGCNN element features{environment_text}. Standardised cell: the Niggli-reduced cell of the given cell
(not made primitive), in the canonical orientation of its lattice parameters (a along x, b in the xy
plane), atoms wrapped into the cell, centred on their centroid — so predictions do not depend on how
the input is rotated. Network: input T-Net (3×3, shared MLP {arch['tnet_widths']}), shared per-point
MLP {arch['input_widths']}, feature T-Net ({arch['input_widths'][-1]}×{arch['input_widths'][-1]}),
shared per-point MLP {arch['output_widths']}, masked global max-pool over the atoms (padding rows of a
batch never reach it, so any number of atoms works){pool_text}, joined by a 7-value cell descriptor
(lattice lengths, angle cosines, volume per atom; an addition to the seed), MLP head {arch['head_widths']} with
one output per target. One multi-task model for all six targets (the seed's proposed next step): the
small elastic and optical sets share the trunk learnt on the 33k formation-energy crystals.
Weights: `{entry['file']}` (sha256 `{entry['sha256']}`).

## Data
{sources}

Split: {entry['split']['method']}; {entry['split']['train_count']} training and
{entry['split']['validation_count']} validation crystals (union of the three sets). Epochs:
{entry['epochs_completed']} of {entry['epochs']} (best validation epoch {entry['best_epoch']}{' of the last stage' if len(stages) > 1 else ''}),
batch {training['batch_size']}, AdamW + one-cycle learning rate (peak {training['learning_rate']}),
{training['loss']}; augmentation: {training['augmentation']}. Training time
{training['seconds'] / 60:.0f} min on 2 shared CPU cores.{stopped}{(' Stages: ' + stage_text + '.') if stage_text else ''}{recomputed}

## Validation metrics (crystals not used for training)
| target | units | MAE | crystals |
|---|---|---|---|
{rows}

As the app reports them:
{derived}

By source set:
{by_source}

Seed paper's PointNet (its own data and 5-fold split): formation energy 0.064 eV/atom, band gap
0.306 eV, Poisson ratio 0.046. `crystal-designer evaluate pointnet` prints these MAEs beside those of
the shipped CGCNN models on the same validation crystals.

Reproduce: `crystal-designer train pointnet` (trains, resumes from its checkpoint, rewrites this card),
`crystal-designer evaluate pointnet`.

## Limits
No neighbour graph: the model sees the atoms of one cell, not their periodic neighbourhoods, so local
bonding is learnt only indirectly (the seed's explanation of why CGCNN is more accurate). A
non-primitive (e.g. conventional) input cell gives a different cloud than its primitive cell and may
change the prediction slightly. Trained on DFT (PBE) labels of ordered inorganic crystals; errors grow
far from the Materials Project's chemistries. Estimates for screening, not a substitute for a
calculation.
"""
