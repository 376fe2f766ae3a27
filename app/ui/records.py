"""One row of the app's data: a library structure or a generated candidate (no Qt here).

Records are built from what the worker sends (see ``app.worker.jobs``) or from the saved
session (see ``app.session``), and turned back into session dicts and export rows.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np

from app.engine.core.property_table import PROPERTY_KEYS
from app.engine.generation.settings import FUNNEL_STAGES, failed_stages

logger = logging.getLogger(__name__)

LIBRARY, GENERATED = "library", "generated"
#: Library status values.
READING, PREDICTING, READY, FAILED = "reading", "predicting", "ready", "failed"

_uids = itertools.count(1)


@dataclass(eq=False)
class CrystalRecord:
    """Everything the table, library, viewer, session and export know about one crystal.

    Attributes
    ----------
    origin : str
        ``library`` or ``generated``.
    name : str
        Label shown and used for exported file names.
    source : str
        File path (``path#block`` for one block of a CIF) of library entries; "" for candidates.
    structure : pymatgen.core.Structure or None
        None while reading, for unreadable files, and for rejected candidates; parsed lazily
        from ``cif_text`` for candidates restored from a session (see :meth:`get_structure`).
    properties : dict
        The eight predicted properties (None where undefined or not predicted yet).
    flags : dict
        Funnel flags of candidates (``decoded``, ``distance_ok`` …).
    density : numpy.ndarray or None
        Decoded density of a kept candidate, shape (32, 32, 32), float16, Z/Å³.
    """

    origin: str
    name: str
    source: str = ""
    path: str = ""
    structure: object | None = None
    cif_text: str | None = None
    formula: str | None = None
    space_group: str | None = None
    n_sites: int | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    status: str = READY
    properties: dict[str, float | None] = field(default_factory=dict)
    prediction_error: str | None = None
    #: The property predictor that produced ``properties`` (``cgcnn`` or ``pointnet``).
    model: str | None = None
    flags: dict[str, bool] = field(default_factory=dict)
    kept: bool | None = None
    latent_distance: float | None = None
    base_name: str | None = None
    index: int | None = None
    density: np.ndarray | None = None
    #: Disordered library entries: how they were predicted (``properties.disorder``): ``method``,
    #: ``note``, ``chosen`` and ``choices`` (each ``structure``, ``properties``, ``n_sites``).
    ordering: dict | None = None
    #: Candidates after the funnel's last stages: ``generation.assessment.stability_record`` fields
    #: (e_above_hull, decomposition, relaxed_space_group, relaxation_state, novelty …), the relaxed
    #: crystal (parsed lazily from ``relaxed_cif``), and whether the viewer shows the unrelaxed one.
    stability: dict = field(default_factory=dict)
    relaxed_structure: object | None = None
    relaxed_cif: str | None = None
    show_unrelaxed: bool = False
    #: Kept candidates: the sampled latent vector z (float32, the VAE's latent size), for the latent map.
    latent: np.ndarray | None = None
    uid: int = field(default_factory=lambda: next(_uids))

    @property
    def is_candidate(self) -> bool:
        return self.origin == GENERATED

    @property
    def has_structure(self) -> bool:
        return self.structure is not None or self.cif_text is not None

    def get_structure(self):
        """The structure, parsing the stored CIF text on first use; None if there is none."""
        if self.structure is None and self.cif_text:
            from pymatgen.core import Structure

            try:
                self.structure = Structure.from_str(self.cif_text, fmt="cif")
            except Exception as error:  # a hand-edited session file; the row stays, without structure
                logger.warning("The stored CIF of %s cannot be parsed: %s", self.name, error)
                self.cif_text = None
        return self.structure

    def get_relaxed_structure(self):
        """The relaxed crystal of a relaxed candidate (parsed from its CIF on first use), else None."""
        if self.relaxed_structure is None and self.relaxed_cif:
            from pymatgen.core import Structure

            try:
                self.relaxed_structure = Structure.from_str(self.relaxed_cif, fmt="cif")
            except Exception as error:  # a hand-edited session file
                logger.warning("The stored relaxed CIF of %s cannot be parsed: %s", self.name, error)
                self.relaxed_cif = None
        return self.relaxed_structure

    def shown_structure(self):
        """What the viewer shows: the relaxed crystal unless the user chose the unrelaxed one."""
        relaxed = None if self.show_unrelaxed else self.get_relaxed_structure()
        return relaxed if relaxed is not None else self.get_structure()

    @property
    def e_above_hull(self) -> float | None:
        value = self.stability.get("e_above_hull")
        return None if value is None else float(value)

    def property(self, key: str) -> float | None:
        value = self.properties.get(key)
        return None if value is None else float(value)

    def rejection(self) -> str | None:
        """Why a candidate was not kept (first failing funnel stage), None if kept or not a candidate."""
        if not self.is_candidate or self.kept:
            return None
        if self.error:
            return self.error
        failed = [stage.rejection for stage in failed_stages(self.flags)]
        return ", ".join(failed) if failed else "filtered"


# --- from the worker ----------------------------------------------------------------------------

def library_record(entry: dict) -> CrystalRecord:
    """Record of one read entry (``jobs._read_entry``); predicting unless it failed to read."""
    error = entry.get("error")
    return CrystalRecord(
        origin=LIBRARY, name=entry.get("name") or entry["source"], source=entry["source"],
        path=entry.get("path") or entry["source"], structure=entry.get("structure"),
        formula=entry.get("formula"), space_group=entry.get("space_group"), n_sites=entry.get("n_sites"),
        warnings=list(entry.get("warnings") or []), error=error,
        status=FAILED if error else PREDICTING,
    )


def apply_prediction(record: CrystalRecord, prediction: dict) -> None:
    """Store one ``read_and_predict`` result (``{"properties", "error"}``) on its record."""
    record.properties = dict(prediction.get("properties") or {})
    record.prediction_error = prediction.get("error")
    record.model = prediction.get("model")
    record.status = READY
    # Library entries: E_hull and decomposition from the predicted formation energy (worker's hull).
    record.stability = dict(prediction.get("stability") or {})
    record.ordering = prediction.get("ordering")
    if record.ordering and record.ordering.get("choices"):
        choose_ordering(record, record.ordering["chosen"])


def choose_ordering(record: CrystalRecord, index: int) -> None:
    """Show and report ordering ``index`` of a disordered entry (its structure and properties)."""
    choice = record.ordering["choices"][index]
    record.ordering["chosen"] = index
    record.structure = choice["structure"]  # the viewer and export use the ordered approximant
    record.properties = dict(choice["properties"])
    if choice.get("stability"):
        record.stability = dict(choice["stability"])


def candidate_name(base_name: str | None, index: int, formula: str | None) -> str:
    stem = (base_name or "random").rsplit(".", 1)[0]
    return f"{stem}_gen{index:05d}_{formula or 'none'}"


def candidate_record(payload: dict, base_name: str | None) -> CrystalRecord:
    """Record of one streamed candidate (``jobs._candidate_payload``)."""
    return CrystalRecord(
        origin=GENERATED, name=candidate_name(base_name, payload["index"], payload.get("formula")),
        structure=payload.get("structure"), cif_text=payload.get("cif"), formula=payload.get("formula"),
        space_group=payload.get("space_group"), n_sites=payload.get("n_sites"), error=payload.get("error"),
        properties=dict(payload.get("properties") or {}), flags=dict(payload.get("flags") or {}),
        kept=bool(payload.get("kept")), latent_distance=payload.get("latent_distance"),
        base_name=base_name, index=payload.get("index"), density=payload.get("density"),
        stability=dict(payload.get("stability") or {}), relaxed_structure=payload.get("relaxed_structure"),
        relaxed_cif=payload.get("relaxed_cif"), latent=_latent(payload.get("latent")),
        model=payload.get("model") or "cgcnn",  # the worker's generator predicts with the CGCNN models
    )


def _latent(value) -> np.ndarray | None:
    """A latent vector from the worker or a session file (list of floats); None if absent or malformed."""
    if value is None:
        return None
    try:
        vector = np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        return None
    return vector if vector.size and np.all(np.isfinite(vector)) else None


# --- session ------------------------------------------------------------------------------------

def _clean_properties(values: dict) -> dict:
    return {k: (None if values.get(k) is None else float(values[k])) for k in PROPERTY_KEYS if k in values}


def to_session(record: CrystalRecord) -> dict | None:
    """The session dict of a library entry or a kept candidate; None for what is not saved."""
    if record.origin == LIBRARY:
        return {"source": record.source, "path": record.path, "name": record.name, "formula": record.formula,
                "space_group": record.space_group, "n_sites": record.n_sites, "warnings": record.warnings,
                "error": record.error, "properties": _clean_properties(record.properties) or None,
                "prediction_error": record.prediction_error, "model": record.model,
                "stability": dict(record.stability) or None}
    if record.kept and record.cif_text:
        return {"name": record.name, "cif": record.cif_text, "formula": record.formula,
                "space_group": record.space_group, "n_sites": record.n_sites,
                "properties": _clean_properties(record.properties), "flags": dict(record.flags),
                "latent_distance": record.latent_distance, "base": record.base_name, "index": record.index,
                "stability": dict(record.stability), "relaxed_cif": record.relaxed_cif, "model": record.model,
                "latent": None if record.latent is None else [round(float(x), 5) for x in record.latent]}
    return None


def library_from_session(data: dict) -> CrystalRecord:
    """A library record restored from the session; its structure is re-read by the worker."""
    properties = data.get("properties")
    return CrystalRecord(
        origin=LIBRARY, name=str(data.get("name") or data["source"]), source=data["source"],
        path=str(data.get("path") or data["source"]), formula=data.get("formula"),
        space_group=data.get("space_group"), n_sites=data.get("n_sites"),
        warnings=[str(w) for w in data.get("warnings") or []], error=data.get("error"),
        properties=dict(properties) if isinstance(properties, dict) else {},
        prediction_error=data.get("prediction_error"), model=data.get("model"),
        stability=dict(data.get("stability") or {}) if isinstance(data.get("stability"), dict) else {},
        status=FAILED if data.get("error") else (READY if isinstance(properties, dict) or data.get("prediction_error")
                                                 else PREDICTING),
    )


def candidate_from_session(data: dict) -> CrystalRecord:
    """A kept candidate restored from the session (structure parsed from its CIF on first use)."""
    return CrystalRecord(
        origin=GENERATED, name=str(data.get("name") or "candidate"), cif_text=data["cif"],
        formula=data.get("formula"), space_group=data.get("space_group"), n_sites=data.get("n_sites"),
        properties=dict(data.get("properties") or {}), flags=dict(data.get("flags") or {}), kept=True,
        latent_distance=data.get("latent_distance"), base_name=data.get("base"), index=data.get("index"),
        stability=dict(data.get("stability") or {}), relaxed_cif=data.get("relaxed_cif"), model=data.get("model"),
        latent=_latent(data.get("latent")),
    )


# --- export -------------------------------------------------------------------------------------

#: Stability fields exported per candidate (keys of ``CrystalRecord.stability``).
EXPORTED_STABILITY_FIELDS = ("e_above_hull", "decomposition", "relaxed_space_group", "relaxation_state", "novelty")


def export_row(record: CrystalRecord, relaxed: bool = True) -> dict | None:
    """The row ``export_structures`` writes for this record; None when it has no structure.

    ``relaxed``: write a relaxed candidate's relaxed crystal (else the decoded one).
    """
    relaxed_structure = record.get_relaxed_structure() if relaxed else None
    structure = relaxed_structure if relaxed_structure is not None else record.get_structure()
    if structure is None:
        return None
    row = {"structure": structure, "name": record.name, "formula": record.formula or
           structure.composition.reduced_formula, "origin": record.origin, "source": record.source or None,
           "space_group": record.space_group, "sites": record.n_sites or len(structure)}
    row.update({key: record.property(key) for key in PROPERTY_KEYS})
    if record.is_candidate:
        row.update({"base": record.base_name, "latent_distance": record.latent_distance, "kept": record.kept})
        row.update({f"flag_{stage.key}": record.flags.get(stage.key) for stage in FUNNEL_STAGES[1:]})
        row.update({key: record.stability.get(key) for key in EXPORTED_STABILITY_FIELDS})
        row["cif_is_relaxed"] = relaxed_structure is not None
    else:  # library entries: E_hull from the predicted formation energy
        row.update({key: record.stability.get(key) for key in ("e_above_hull", "decomposition")})
    return row
