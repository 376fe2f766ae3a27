"""Model cards of the DING models, written from their manifest entries."""

from __future__ import annotations


def _data_section(entry: dict) -> str:
    report = entry["data"]["preparation"]
    return f"""## Data
- {entry['data']['sources'][0]}

`compositions/oqmd/`: the three `formula,target` files ({report['formation_enthalpy_rows']} rows each) joined on
the normalised (reduced) formula ({report['joined_three_files']} compositions with all three labels), plus the
compositions of `ding_three_targets.csv.gz` the join lacks ({report['compositions_joined']} in all; where a
composition appears twice the lowest formation enthalpy is kept, as in the paper). Dropped: formulas that cannot
be read or have more than 10 atoms of one element per formula unit (about {report['formation_enthalpy_unusable_formulas']}
per file) and {report['implausible_labels_dropped']} compositions with implausible labels (outside
{entry['data']['plausible_ranges']}). Used: {report['compositions_used']} compositions.

Split: {entry['split']['method']}; {entry['split']['train_count']} training and
{entry['split']['validation_count']} validation compositions. The paper's own test split (10 % of OQMD) is held
back from the shared data and not used. Epochs: {entry['epochs_completed']} of {entry['epochs']} planned (best
validation epoch {entry['best_epoch']}{'' if entry['epochs_completed'] >= entry['epochs'] else '; stopped early on a shared 2-core machine, the best epoch so far ships'}),
batch {entry['training_settings']['batch_size']}, {entry['training_settings']['optimizer']}
(peak learning rate {entry['training_settings']['learning_rate']}); loss: {entry['training']['loss']}."""


def _stages_text(entry: dict) -> str:
    stages = entry.get("training", {}).get("stages") or []
    if len(stages) < 2:
        return ""
    listed = "; ".join(f"stage {i + 1}: {s.get('epochs')} epochs, batch {s.get('batch_size')}, peak learning rate "
                       f"{s.get('learning_rate')} ({s.get('schedule')})" for i, s in enumerate(stages))
    return f"\nTraining stages (the epoch counts above are the last stage's): {listed}.\n"


def residual_card(name: str, entry: dict) -> str:
    """Card of a ``ding_residual`` predictor (elemental part + learnt residual)."""
    arch = entry["architecture"]
    prop = arch["property"]
    unit = entry["units"][prop]
    metrics = entry["metrics"]
    inside = metrics["validation_mae_in_reliable_range"][prop]
    reference = entry.get("reference_paper_architecture")
    reference_row = "" if not reference else (
        f"| MAE of the paper's Table 1 DNN (one-hot counts), trained here on the same split | "
        f"{reference['validation_mae']:.4f} | – |\n")
    derived = entry.get("derived_from")
    derived_text = "" if not derived else (
        f" The network and its standardisation are those of `{derived['model']}` (sha256 "
        f"`{derived['sha256'][:12]}…`): OQMD's energy per atom is the formation enthalpy plus the fraction-weighted "
        "elemental reference energies, so only the elemental part differs; a second network would learn the same "
        "residual again.")
    report = entry["data"]["preparation"]
    settings = entry["training_settings"]
    return f"""# Model card: {name}

{entry['description']}.

## Model
The shipped DING predictor of {prop.replace('_', ' ')} ({unit}), implemented in this project. It replaces the
paper's Table 1 DNN on the one-hot count vector (Pathak et al. 2020), which stays trainable
(`crystal-designer train ding --paper-predictors`) and whose figure on the same split is in the table below.
Prediction = elemental part Σᵢ xᵢ cᵢ (xᵢ element fractions; cᵢ {arch['elemental_part']}) + a residual network:
dense {arch['activation']} layers {arch['hidden']} on {arch['features']}; element properties (from pymatgen,
stored in the weights): {', '.join(arch['element_properties'])}.{derived_text}
A pure element (the data hold 8 of the {len(arch['vocabulary'])}) gets {arch.get('pure_elements', "the network's prediction")}.
Weights: `{entry['file']}` (sha256 `{entry['sha256']}`).

## Data
- {entry['data']['sources'][0]}

`compositions/oqmd/`, joined on the normalised formula as for the other DING models
({report['compositions_used']} compositions used; duplicates keep the lowest formation enthalpy).
Split: {entry['split']['method']}; {entry['split']['train_count']} training and
{entry['split']['validation_count']} validation compositions. {entry['training']['early_stopping']}.
Epochs: {entry['epochs_completed']} of {entry['epochs']} planned (best epoch {entry['best_epoch']}),
batch {settings['batch_size']}, {settings['optimizer']} (peak learning rate {settings['learning_rate']});
loss: {entry['training']['loss']}.

## Validation metrics (compositions not used for training or for any choice)
| metric | {unit} | paper |
|---|---|---|
| MAE, all {metrics['validation_count']} validation compositions | {metrics['validation_mae'][prop]:.4f} | {metrics['paper_mae'][prop]} |
| MAE inside the paper's reliable range ({metrics['validation_count_in_reliable_range']} compositions) | {inside if inside is None else f'{inside:.4f}'} | – |
| RMSE | {metrics['validation_rmse'][prop]:.4f} | – |
{reference_row}
The paper's figure comes from its own split of OQMD; this split holds out whole formulas (by hash), so no
validation composition was seen in training under any structure.

Reproduce: `crystal-designer train ding` (trains, resumes from its checkpoints, rewrites this card),
`crystal-designer evaluate ding` (recomputes the metrics from the shipped weights).

## Limits
Composition only: one value per composition (OQMD's lowest-energy structure), blind to polymorphs.
Reliable inside the ranges of the paper's Table 3; targets outside them get a warning.
Estimates for screening, not a substitute for a calculation.
"""


def predictor_card(name: str, entry: dict) -> str:
    if entry.get("kind") == "ding_residual":
        return residual_card(name, entry)
    prop = entry["architecture"]["property"]
    unit = entry["units"][prop]
    metrics = entry["metrics"]
    inside = metrics["validation_mae_in_reliable_range"][prop]
    layers = ", ".join(f"{w}" + (f" (dropout {d})" if d else "") for w, d in entry["architecture"]["layers"])
    return f"""# Model card: {name}

{entry['description']}.

## Model
DING predictor (Pathak et al., "Deep Learning Enabled Inorganic Material Generator", 2020, Table 1),
implemented in PyTorch in this project: input the one-hot count feature vector of the composition
({len(entry['architecture']['vocabulary'])} elements × counts 0..{entry['architecture']['max_count']}),
dense ReLU layers {layers}, then one linear output. Weights: `{entry['file']}` (sha256 `{entry['sha256']}`).

{_data_section(entry)}
{_stages_text(entry)}
## Validation metrics (compositions not used for training)
| metric | {unit} | paper |
|---|---|---|
| MAE, all {metrics['validation_count']} validation compositions | {metrics['validation_mae'][prop]:.4f} | {metrics['paper_mae'][prop]} |
| MAE inside the paper's reliable range ({metrics['validation_count_in_reliable_range']} compositions) | {inside if inside is None else f'{inside:.4f}'} | – |
| RMSE | {metrics['validation_rmse'][prop]:.4f} | – |

Reproduce: `crystal-designer train ding` (trains and rewrites this card; a second stage from the shipped
weights: `train_ding(continue_shipped=True)`), `crystal-designer evaluate ding` (recomputes the metrics from the
shipped weights).

## Limits
Composition only: one value per composition (OQMD's lowest-energy structure), blind to polymorphs.
Reliable inside the ranges of the paper's Table 3; targets outside them get a warning.
Estimates for screening, not a substitute for a calculation.
"""


def _kl_text(entry: dict) -> str:
    loss = entry.get("training", {}).get("loss", "")
    if "weight 1.0" in loss or "weight" not in loss:
        return ""
    return ("\nWhy the KL weight is below 1: with the full ELBO the KL term wins before the decoder has learnt to read "
            "the latent vector; the posterior collapses to the prior, the decoder falls back on the three properties "
            "alone and samples repeat a handful of compositions (an earlier version trained that way reconstructed "
            "0.2 % of the validation compositions). A smaller weight (a beta-VAE) keeps the composition in the latent "
            "code; He-normal initialisation lets the signal through the 8 ReLU layers from the first step.\n")


def _sampling_text() -> str:
    from app.engine.compositions.runtime import DEFAULT_LATENT_SCALE, DEFAULT_TEMPERATURE, DEFAULT_TOP_P

    return f"s = {DEFAULT_LATENT_SCALE}, T = {DEFAULT_TEMPERATURE}, p = {DEFAULT_TOP_P}"


def cvae_card(entry: dict) -> str:
    arch = entry["architecture"]
    metrics = entry["metrics"]
    generation = metrics.get("generation")
    generation_text = "" if not generation else "\n## Generation (measured by `crystal-designer evaluate ding --record`)\n" \
        + "\n".join(f"- {key}: {value}" for key, value in generation.items()) + "\n"
    n_features = len(arch["vocabulary"]) * (arch["max_count"] + 1)
    return f"""# Model card: ding_cvae

{entry['description']}.

## Model
DING generator (Pathak et al. 2020, Table 2) in PyTorch: encoder {n_features}+3 → {' → '.join(map(str, arch['hidden']))}
→ latent {arch['latent_dim']} (mean and log-variance); decoder {arch['latent_dim']}+3 →
{' → '.join(map(str, reversed(arch['hidden'])))} → {n_features}, ReLU between layers and a softmax over each element's
count block (0..{arch['max_count']}) at the output. The three properties ({', '.join(arch['conditions'])}; standardised
with the training means {[round(v, 3) for v in arch['condition_mean']]} and deviations
{[round(v, 3) for v in arch['condition_std']]}) are appended at the encoder's and the decoder's input. Weights:
`{entry['file']}` (sha256 `{entry['sha256']}`).

Generation: z ~ N(0, s²I) with the target properties; each element's count is drawn from the decoder's softmax at
temperature T, limited to the most likely counts that together hold probability p (the nucleus), so an element the
decoder gives a few per cent never enters by chance. Defaults: {_sampling_text()}. The paper reads the most likely
count of every element from z ~ N(0, I) (`--temperature 0 --latent-scale 1`): with the shipped predictors that
repeats compositions (77 % of 500 samples unique) and barely follows the target (median predicted formation
enthalpy 0.38 eV/atom lower at -2.0 than at -0.5 eV/atom; `crystal-designer evaluate ding --temperature 0
--latent-scale 1 --top-p 1`). A spread below 1 suits a decoder trained with a
KL weight below 1: its posteriors lie well inside the prior, whose tails decode poorly.

{_data_section(entry)}

{_kl_text(entry)}
## Validation metrics
Reconstruction accuracy (the paper's definition: decoded feature vector identical to the input, here from the latent
mean): {metrics['validation_reconstruction_accuracy']:.4f} on {metrics['validation_count']} validation compositions
(paper: 0.943 ± 0.004 on its test split).
{generation_text}
Reproduce: `crystal-designer train ding`, `crystal-designer evaluate ding`.

## Limits
Proposes compositions only (at most 10 atoms of one element per formula unit, the {len(arch['vocabulary'])}
elements of the data). Its proposals are judged by the DING predictors, not by a calculation; structures come from
prototypes of known crystals (`crystal-designer compositions structures`).
"""
