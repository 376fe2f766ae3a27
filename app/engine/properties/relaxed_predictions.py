"""Prediction records of relaxed structures: read, relax with CHGNet, predict the relaxed cells."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from app.engine.core.cancel import CancelToken, ProgressCallback
from app.engine.io.crystal_io import ReadLimits, expand_paths, read_crystal_file
from app.engine.properties.predict_files import prediction_record
from app.engine.properties.predictor import PropertyPredictor
from app.engine.stability.formation import chgnet_formation_energy
from app.engine.stability.relax import DEFAULT_FMAX, DEFAULT_MAX_STEPS, relax_structures

#: Relaxation fields copied into each record (``relaxation_`` prefix where ambiguous).
RELAXATION_FIELDS = ("energy_per_atom", "steps", "max_force", "volume_change_percent", "rms_displacement",
                     "space_group_before", "space_group_after", "matches_unrelaxed", "converged")


def predict_relaxed_files(paths: Sequence[str | Path], predictor: PropertyPredictor,
                          limits: ReadLimits | None = None, fmax: float = DEFAULT_FMAX,
                          max_steps: int = DEFAULT_MAX_STEPS, device: str = "auto",
                          progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> list[dict]:
    """Records like :func:`predict_files`'s, of the relaxed structures, with a ``relaxation`` dict
    (CHGNet energy eV/atom, steps, largest force eV/Å, volume change %, RMS displacement Å, space
    groups before/after, still matching, CHGNet formation energy eV/atom) or an ``error`` starting
    "relaxation failed: "."""
    files, problems = expand_paths(paths)
    crystals = list(problems)
    for path in files:
        crystals.extend(read_crystal_file(path, limits or ReadLimits()))
    usable = [c for c in crystals if c.ok and c.structure.is_ordered]
    results = relax_structures([c.structure for c in usable], fmax=fmax, max_steps=max_steps, device=device,
                               progress=progress, cancel=cancel)
    outcome = {id(c): r for c, r in zip(usable, results)}
    relaxed = [(c, outcome[id(c)]) for c in usable if outcome[id(c)].error is None]
    predictions = predictor.predict([r.structure for _, r in relaxed])
    predicted = {id(c): p for (c, _), p in zip(relaxed, predictions)}
    records = []
    for crystal in crystals:
        result = outcome.get(id(crystal))
        if not crystal.ok:
            record = prediction_record(crystal, None, crystal.error or "The file could not be read.")
        elif result is None:
            record = prediction_record(crystal, None, "relaxation needs an ordered structure (no partial occupancies)")
        elif result.error is not None:
            record = prediction_record(crystal, None, f"relaxation failed: {result.error}")
        else:
            prediction = predicted[id(crystal)]
            error = str(prediction) if isinstance(prediction, Exception) else None
            record = prediction_record(crystal, None if error else prediction.values, error)
            record["formula"] = result.structure.composition.reduced_formula
        record["model"] = getattr(predictor, "model_name", "cgcnn")
        record["relaxation"] = None if result is None or result.error else {
            key: getattr(result, key) for key in RELAXATION_FIELDS}
        if record["relaxation"] is not None:  # CHGNet's formation energy of the relaxed cell (eV/atom)
            record["relaxation"]["formation_energy_per_atom"] = chgnet_formation_energy(
                result.structure, result.energy_per_atom)[0]
        records.append(record)
    return records
