"""The funnel's last stages: relax the kept candidates, place them against the convex hull, and
test their structural novelty.

After the decoder-side filters (distances, charge balance, formula, windows, uniqueness), the
kept candidates (already deduplicated, so no crystal is relaxed twice; or every decoded one on
request) are relaxed with CHGNet, their formation energy (by default the mean of CHGNet's energy
of the relaxed cell against the elemental references and the property model's prediction on it)
is placed against the reference hull, and each is compared with the training crystals of its
reduced formula and with the base. The stages:

``relaxed``            the relaxation converged (or relaxation is off: everything passes)
``near_hull``          E_hull ≤ ``max_e_above_hull`` (eV/atom)
``structurally_novel`` neither the base, nor a training crystal, nor a relaxed duplicate of an
                       earlier kept candidate

The S.U.N. count (stable, unique, novel) is the number of candidates kept by the earlier stages
that relaxed (when relaxing), are near the hull, still unique after relaxation, and novel, whichever of the last filters
are switched on. With ``relax_all`` the other decoded candidates are relaxed and described too,
but stay out of the funnel and the S.U.N. count.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

from app.engine.core.cancel import CancelToken, ProgressCallback
from app.engine.core.symmetry import format_space_group, space_group
from app.engine.generation.novelty import same_crystal, structure_matcher

logger = logging.getLogger(__name__)

ASSESSMENT_STAGES = (
    ("relaxed", "Relaxed (CHGNet)"),
    ("near_hull", "Near the convex hull"),
    ("structurally_novel", "Structurally novel"),
)


def relaxation_targets(candidates: Sequence, relax_all: bool) -> list:
    """Candidates to relax: the kept ones, or every decoded one that passes the distance rules."""
    if relax_all:
        return [c for c in candidates if c.structure is not None and c.flags.get("bonds_ok", True)]
    return [c for c in candidates if c.kept]


def assess(candidates: Sequence, funnel: dict[str, int], settings, *, base, predictor, structure_index,
           hull, relax: Callable | None, device: str = "cpu", progress: ProgressCallback | None = None,
           cancel: CancelToken | None = None) -> int:
    """Run the last three stages on ``candidates`` in place; return the S.U.N. count.

    Parameters
    ----------
    candidates : sequence of Candidate
        All candidates of a run (kept flags set by the earlier stages).
    funnel : dict
        Stage counts, updated with the three stage keys.
    settings : GenerationSettings
        Uses ``relax``, ``relax_all``, ``relax_fmax`` (eV/Å), ``relax_steps``, ``max_e_above_hull``
        (eV/atom), ``require_near_hull``, ``require_novel``, ``hull_energy``.
    base : Structure or None
    predictor : PropertyPredictor
        Predicts the relaxed cells' properties (their formation energy feeds the hull).
    structure_index : StructureIndex
    hull : ReferenceHull
    relax : callable or None
        ``relax(structures, fmax=, max_steps=, device=, progress=, cancel=)`` → list of
        RelaxationResult (``app.engine.stability.relax.relax_structures``).
    """
    for key, _label in ASSESSMENT_STAGES:
        funnel[key] = 0
    targets = relaxation_targets(candidates, settings.relax_all) if settings.relax else []
    if targets:
        results = relax([c.structure for c in targets], fmax=settings.relax_fmax, max_steps=settings.relax_steps,
                        device=device, progress=progress, cancel=cancel)
        for candidate, result in zip(targets, results):
            candidate.relaxation = result
            if result.error is None and result.structure is not None:
                candidate.relaxed_structure = result.structure
    assessed = [c for c in candidates if c.structure is not None
                and (c.kept or (settings.relax and settings.relax_all and c.relaxation is not None))]
    _predict_relaxed(assessed, predictor)
    matcher = structure_matcher()
    distinct: dict[str, list] = {}
    sun = 0
    # By identity: ``in`` on the list would compare dataclass fields, O(candidates × assessed).
    assessed_ids = {id(c) for c in assessed}
    for candidate in candidates:
        if cancel is not None:
            cancel.raise_if_cancelled()
        if id(candidate) not in assessed_ids:
            continue
        was_kept = candidate.kept
        _judge_candidate(candidate, settings, base, structure_index, hull, matcher, distinct)
        if was_kept:
            _count_stages(candidate, settings, funnel)
            sun += int((candidate.flags["relaxed"] or not settings.relax)
                       and candidate.flags["near_hull"] and candidate.flags["structurally_novel"])
    funnel["sun"] = sun
    return sun


def final_structure(candidate):
    """The relaxed structure when there is one, else the decoded one."""
    return candidate.relaxed_structure if candidate.relaxed_structure is not None else candidate.structure


def _predict_relaxed(candidates: list, predictor) -> None:
    """Replace the predicted properties of relaxed candidates by those of their relaxed cells."""
    relaxed = [c for c in candidates if c.relaxed_structure is not None]
    if not relaxed:
        return
    for candidate, prediction in zip(relaxed, predictor.predict([c.relaxed_structure for c in relaxed])):
        if not isinstance(prediction, Exception):
            candidate.unrelaxed_properties = dict(candidate.properties)
            candidate.properties = dict(prediction.values)


def hull_formation_energy(candidate, settings) -> tuple[float | None, str | None]:
    """Formation energy per atom (eV/atom) to place ``candidate`` on the hull, or (None, why).

    Relaxed candidates use ``settings.hull_energy`` (default: the mean of CHGNet's formation
    energy of the relaxed cell and the predicted one, see ``app.engine.stability.formation``);
    the others the predicted one.
    """
    from app.engine.stability.formation import chgnet_formation_energy, hull_formation

    predicted = candidate.properties.get("formation_energy_per_atom")
    chgnet = None
    relaxation = candidate.relaxation
    if candidate.relaxed_structure is not None and getattr(relaxation, "energy_per_atom", None) is not None:
        chgnet, _ = chgnet_formation_energy(candidate.relaxed_structure, relaxation.energy_per_atom)
    formation, _source = hull_formation(predicted, chgnet, getattr(settings, "hull_energy", "predicted"))
    return (formation, None) if formation is not None else (None, "no predicted formation energy")


def _judge_candidate(candidate, settings, base, structure_index, hull, matcher, distinct) -> None:
    structure = final_structure(candidate)
    flags = candidate.flags
    relaxation = candidate.relaxation
    flags["relaxed"] = relaxation is not None and relaxation.error is None and candidate.relaxed_structure is not None
    if relaxation is not None and relaxation.error is not None:
        candidate.rejection = f"relaxation failed: {relaxation.error}"
    if flags["relaxed"]:
        candidate.space_group = format_space_group(space_group(structure))
    formation, problem = hull_formation_energy(candidate, settings)
    if formation is None:
        candidate.e_above_hull, candidate.decomposition = None, None
        candidate.hull_error = problem
    else:
        found = hull.e_above_hull(structure.composition, formation)
        candidate.e_above_hull, candidate.decomposition, candidate.hull_error = (
            found.e_above_hull, found.decomposition, found.error)
    flags["near_hull"] = candidate.e_above_hull is not None and candidate.e_above_hull <= settings.max_e_above_hull
    candidate.novelty = structure_index.novelty(structure, base=base)
    formula = structure.composition.reduced_formula
    duplicate = any(same_crystal(structure, other, matcher) for other in distinct.get(formula, ()))
    if duplicate:
        flags["unique"] = False
    flags["structurally_novel"] = candidate.novelty.is_novel and not duplicate
    if candidate.kept and not duplicate:
        distinct.setdefault(formula, []).append(structure)


def _count_stages(candidate, settings, funnel) -> None:
    """Count a previously kept candidate through the three stages; unkeep it where it fails one."""
    required = {
        "relaxed": settings.relax,
        "near_hull": settings.require_near_hull,
        "structurally_novel": settings.require_novel,
    }
    for key, _label in ASSESSMENT_STAGES:
        if required[key] and not candidate.flags[key]:
            candidate.kept = False
        if key == "structurally_novel" and not candidate.flags["unique"] and settings.require_unique:
            candidate.kept = False
        if not candidate.kept:
            return
        funnel[key] += 1


def relaxation_record(result) -> dict | None:
    """JSON-ready description of a RelaxationResult (None when the candidate was not relaxed)."""
    if result is None:
        return None
    fields = ("energy_per_atom", "steps", "max_force", "volume_change_percent", "rms_displacement",
              "space_group_before", "space_group_after", "matches_unrelaxed", "error")
    return {key: getattr(result, key, None) for key in fields}


def relaxation_state(candidate) -> str:
    """``relaxed``, ``relaxation failed: …`` or ``not relaxed``, for tables and records."""
    if candidate.relaxation is None:
        return "not relaxed"
    if candidate.relaxed_structure is None:
        return candidate.rejection or f"relaxation failed: {candidate.relaxation.error}"
    return "relaxed"


def stability_record(candidate) -> dict:
    """The last stages' fields of one candidate, JSON-ready.

    ``e_above_hull`` (eV/atom; with ``hull_error`` saying why when null), ``decomposition``,
    ``relaxed_space_group`` (of the relaxed, refined cell; null when not relaxed), ``relaxation``
    (see :func:`relaxation_record`), ``relaxation_state``, ``novelty`` (``novel``, ``the base``,
    ``known (id)``), ``unrelaxed_properties`` (predictions of the decoded cell when relaxed).
    """
    return {
        "e_above_hull": candidate.e_above_hull,
        "decomposition": candidate.decomposition,
        "hull_error": candidate.hull_error,
        "relaxed_space_group": candidate.space_group if candidate.relaxed_structure is not None else None,
        "relaxation_state": relaxation_state(candidate),
        "relaxation": relaxation_record(candidate.relaxation),
        "novelty": candidate.novelty.label() if candidate.novelty is not None else None,
        "unrelaxed_properties": candidate.unrelaxed_properties,
    }
