"""Jobs the worker process runs: top-level functions ``job(context, **kwargs) -> result``.

Each is pickled by reference into a :class:`~app.worker.protocol.JobRequest`. They receive a
:class:`~app.worker.process.JobContext` (progress, streaming, cancel token, models) and return
plain data: dicts, lists, numpy arrays and pymatgen structures.
"""

from __future__ import annotations

import logging
from pathlib import Path

from app.engine.core.errors import ModelError
from app.engine.core.symmetry import space_group_label

logger = logging.getLogger(__name__)

#: Read entries are streamed to the app in chunks of this many, so a big folder fills in steadily.
READ_CHUNK = 50


def runs_between_batches(job):
    """Mark a short, interactive job that may run between the batches of a long one."""
    job.runs_between_batches = True
    return job


def _read_entry(crystal) -> dict:
    """Everything the library shows about one read crystal (see ``app.ui.records``)."""
    structure = crystal.structure if crystal.ok else None
    return {
        "source": crystal.source,
        "path": crystal.source.removesuffix(f"#{crystal.block}") if crystal.block else crystal.source,
        "name": crystal.name,
        "structure": structure,
        "warnings": list(crystal.warnings),
        "error": crystal.error,
        "formula": structure.composition.reduced_formula if structure is not None else None,
        "space_group": space_group_label(structure) if structure is not None else None,
        "n_sites": len(structure) if structure is not None else None,
    }


def _read(context, paths: list[str]) -> list[dict]:
    from app.engine.io.crystal_io import read_crystals

    crystals = read_crystals([Path(p) for p in paths], progress=context.progress, cancel=context.cancel)
    entries = []
    for start in range(0, len(crystals), READ_CHUNK):
        context.cancel.raise_if_cancelled()
        chunk = [_read_entry(c) for c in crystals[start:start + READ_CHUNK]]
        context.emit(chunk)
        entries.extend(chunk)
    return entries


@runs_between_batches
def load_models(context) -> dict:
    """Load the property predictor and the generator; see ``WorkerModels.load`` for the result."""
    return context.models.load()


@runs_between_batches
def describe_models(context) -> dict:
    """What the worker has loaded by now (``WorkerModels.describe``); loads nothing."""
    return context.models.describe()


@runs_between_batches
def read_files(context, paths: list[str]) -> list[dict]:
    """Read crystal files and folders (no prediction); entries are also streamed as items."""
    return _read(context, paths)


@runs_between_batches
def read_and_predict(context, paths: list[str], predictor: str = "cgcnn") -> list[dict]:
    """Read files and folders, stream the read entries, then predict the eight properties.

    ``predictor`` names the property predictor (``cgcnn`` or ``pointnet``).

    Returns
    -------
    list of dict
        One ``{"source", "properties" (dict or None), "error" (str or None), "model"}`` per
        readable structure, in reading order (``model``: the predictor that made it).
    """
    entries = [e for e in _read(context, paths) if e["structure"] is not None]
    results = _predict_entries(context, entries, predictor)
    structures = {e["source"]: e["structure"] for e in entries}
    for result in results:
        result["model"] = predictor
        add_stability(context, result, structures[result["source"]])
    return results


def hull_fields(context, composition, properties: dict | None) -> dict:
    """``e_above_hull`` (eV/atom), ``decomposition`` and ``hull_error`` of one prediction, from its
    predicted formation energy against the reference hull (as ``crystal-designer predict`` does)."""
    from app.engine.stability.hull import HullResult

    hull = context.models.hull
    energy = (properties or {}).get("formation_energy_per_atom")
    if hull is None:
        result = HullResult(None, None, context.models.hull_error or "no reference hull in this installation")
    elif energy is None:
        result = HullResult(None, None, "no predicted formation energy")
    else:
        result = hull.e_above_hull(composition, float(energy))
    return {"e_above_hull": result.e_above_hull, "decomposition": result.decomposition, "hull_error": result.error}


def add_stability(context, result: dict, structure) -> None:
    """Give a prediction result (and each of its orderings) its hull fields as ``stability``."""
    ordering = result.get("ordering")
    for choice in (ordering or {}).get("choices") or []:
        choice["stability"] = hull_fields(context, choice["structure"].composition, choice["properties"])
    if ordering and ordering.get("choices"):
        result["stability"] = dict(ordering["choices"][ordering["chosen"]]["stability"])
    else:
        result["stability"] = hull_fields(context, structure.composition, result.get("properties"))


def _predict_entries(context, entries: list[dict], name: str) -> list[dict]:
    try:
        predictor = context.models.predictor_named(name)
    except ModelError as error:
        return [{"source": e["source"], "properties": None, "error": str(error)} for e in entries]
    outcomes = predictor.predict([e["structure"] for e in entries], progress=context.progress, cancel=context.cancel)
    results = []
    for entry, outcome in zip(entries, outcomes):
        if not entry["structure"].is_ordered:
            results.append(_disordered_result(predictor, entry))
        elif isinstance(outcome, Exception):
            results.append({"source": entry["source"], "properties": None, "error": str(outcome)})
        else:
            results.append({"source": entry["source"], "properties": dict(outcome.values), "error": None})
    return results


def _disordered_result(predictor, entry: dict) -> dict:
    """Prediction of a disordered entry through its approximant, with every ordering tried."""
    from app.engine.core.errors import CrystalDesignerError
    from app.engine.properties.disorder import predict_disordered

    try:
        result = predict_disordered(predictor, entry["structure"])
    except CrystalDesignerError as error:
        return {"source": entry["source"], "properties": None, "error": str(error)}
    choices = [{"structure": o.structure, "properties": dict(o.values), "n_sites": len(o.structure)}
               for o in result.orderings]
    ordering = {"method": result.method, "note": result.note, "chosen": result.chosen, "choices": choices}
    return {"source": entry["source"], "properties": dict(result.values), "error": None, "ordering": ordering}


def _candidate_payload(candidate) -> dict:
    """What the app needs of one candidate; the structures, CIFs and density only if kept."""
    from app.engine.generation.assessment import stability_record

    payload = {
        "index": candidate.index,
        "formula": candidate.formula,
        "properties": dict(candidate.properties),
        "flags": dict(candidate.flags),
        "latent_distance": float(candidate.latent_distance),
        "kept": bool(candidate.kept),
        "error": candidate.error,
        "n_sites": len(candidate.structure) if candidate.structure is not None else None,
        "structure": None, "cif": None, "density": None, "space_group": None,
        "relaxed_structure": None, "relaxed_cif": None, "stability": stability_record(candidate),
        # Set by the generator for candidates that passed the filters before relaxation (the latent map).
        "latent": getattr(candidate, "latent", None),
    }
    if candidate.kept and candidate.structure is not None:
        from pymatgen.io.cif import CifWriter

        payload.update(structure=candidate.structure, cif=str(CifWriter(candidate.structure)),
                       density=candidate.density, space_group=candidate.space_group)
        if candidate.relaxed_structure is not None:
            payload.update(relaxed_structure=candidate.relaxed_structure,
                           relaxed_cif=str(CifWriter(candidate.relaxed_structure)))
    payload["stability"].pop("relaxation", None)  # the app shows the state; the record stays small
    payload["stability"].pop("unrelaxed_properties", None)
    return payload


def generate(context, settings, base=None, second=None) -> dict:
    """Generate candidates, streaming them in batches as items.

    Parameters
    ----------
    settings : GenerationSettings
        As the app built it (pickled whole; see :mod:`app.engine.generation.settings`).
    base, second : pymatgen.core.Structure, optional

    Returns
    -------
    dict
        ``{"funnel": {stage key: count}, "sun": stable + unique + novel count}``.
    """
    generator = context.models.generator
    pending: list[dict] = []

    # Kept candidates change in the last stages (relaxation, hull, novelty): they are sent once
    # those are done; the rejected ones stream batch by batch.
    held: list = []

    def on_candidate(candidate) -> None:
        if candidate.kept:
            held.append(candidate)
        else:
            pending.append(_candidate_payload(candidate))

    def progress(done: int, total: int, message: str = "") -> None:
        # One message per batch: the candidates first, so counts and rows agree in the app.
        context.emit(pending)
        pending.clear()
        context.progress(done, total, message)
        context.run_waiting_interactive_jobs()

    result = generator.generate(settings, base=base, second=second, progress=progress,
                                cancel=context.cancel, on_candidate=on_candidate)
    pending.extend(_candidate_payload(candidate) for candidate in held)
    context.emit(pending)
    return {"funnel": dict(result.funnel), "sun": result.sun}


_LATENT_MAP: dict = {}


@runs_between_batches
def latent_map(context, bases: list | None = None) -> dict:
    """The shipped latent map and the latent means of ``bases`` projected onto it.

    Parameters
    ----------
    bases : list of (str, pymatgen.core.Structure), optional
        Named structures to place on the map (cubic, ≤ 40 sites; others get a reason).

    Returns
    -------
    dict
        ``points`` ((n, 2) float), ``formation_energy`` ((n,) eV/atom), ``validation`` ((n,) bool),
        ``structure_class`` ((n,) int) and ``class_names``, ``explained_variance`` (2 floats),
        ``mean`` and ``components`` (the projection, for candidates' latent vectors), ``stale``
        (str or None: the generator's encoder differs from the one the map was made with) and
        ``bases`` (one ``{"name", "point" ((2,) or None), "error"}`` each).

    Raises
    ------
    ModelError
        When the map is not shipped or cannot be read.
    """
    from app.engine.core.errors import CrystalDesignerError
    from app.engine.core.registry import load_manifest
    from app.engine.generation.latent_map import LatentMap

    if "map" not in _LATENT_MAP:
        _LATENT_MAP["map"] = LatentMap.load()
    latent = _LATENT_MAP["map"]
    encoder = load_manifest().get("density_vae", {}).get("sha256")
    stale = None if encoder in (None, latent.encoder_sha256) else (
        "The latent map was computed with another density_vae; rebuild it with "
        "'crystal-designer train latent-map'.")
    placed = []
    for name, structure in bases or []:
        try:
            mu, _ = context.models.generator.encode_structure(structure)
            placed.append({"name": name, "point": latent.project(mu)[0], "error": None})
        except CrystalDesignerError as error:
            placed.append({"name": name, "point": None, "error": str(error)})
    return {"points": latent.points, "formation_energy": latent.formation_energy, "validation": latent.validation,
            "structure_class": latent.structure_class, "class_names": list(latent.class_names),
            "explained_variance": [float(x) for x in latent.explained_variance], "mean": latent.mean,
            "components": latent.components, "stale": stale, "bases": placed}


@runs_between_batches
def encode_density(context, structure) -> dict:
    """Density map of a crystal for the viewer, in the representation the generator uses for it.

    Cubic cells (≤ 40 sites in the conventional cell) get the cubic ICSG3D map, unless their
    composition class goes to the periodic generator (``generator.PERIODIC_CUBIC_CLASSES``, e.g.
    ABX3 perovskites); every other ordered crystal of ≤ 20 primitive sites gets the periodic map of
    its standard cell.

    Returns
    -------
    dict
        ``density`` (numpy float32: (32, 32, 32) Z/Å³ for the cubic map, (24, 24, 24) sum of unit
        Gaussians for the periodic one), ``lattice_abc`` (3 floats, Å), ``lattice_matrix`` (None for the
        cubic map; the periodic map's cell, (3, 3) rows a, b, c in Å) and ``structure`` (the cell the map
        is computed for).

    Raises
    ------
    StructureReadError
        If neither representation holds the crystal (the periodic one's message, which names the limit).
    """
    from app.engine.core.errors import StructureReadError
    from app.engine.generation import density as cubic
    from app.engine.generation import periodic_density
    from app.engine.generation.generator import PERIODIC_CUBIC_CLASSES

    amounts = tuple(sorted(int(round(x)) for x in structure.composition.reduced_composition.values()))
    if amounts not in PERIODIC_CUBIC_CLASSES:
        try:
            encoded = cubic.encode(structure)
            return {"density": encoded.density, "lattice_abc": [float(x) for x in encoded.lattice_abc],
                    "lattice_matrix": None, "structure": encoded.structure}
        except StructureReadError:
            pass  # not cubic, or too big a conventional cell: the periodic map may still hold it
    maps = periodic_density.encode(structure)
    lattice = maps.structure.lattice
    return {"density": maps.density, "lattice_abc": [float(x) for x in lattice.abc],
            "lattice_matrix": lattice.matrix.copy(), "structure": maps.structure}


# -- DING compositions ---------------------------------------------------------------------------

_COMPOSITION_MODELS: dict = {}


def _composition_models() -> dict:
    """The DING generator (with its predictors) and the prototype library, loaded once per worker."""
    if not _COMPOSITION_MODELS:
        from app.engine.compositions.runtime import CompositionGenerator
        from app.engine.compositions.structures import PrototypeLibrary

        _COMPOSITION_MODELS["generator"] = CompositionGenerator()
        _COMPOSITION_MODELS["prototypes"] = PrototypeLibrary.load()
    return _COMPOSITION_MODELS


def generate_compositions(context, targets: dict, n: int = 200, seed: int = 0) -> dict:
    """DING compositions for ``targets``: ``{"candidates": [unique records], "counts", "warnings"}``."""
    result = _composition_models()["generator"].generate(targets, n=n, seed=seed, progress=context.progress,
                                                         cancel=context.cancel)
    return {"candidates": [c.as_record() for c in result.candidates if c.unique], "counts": dict(result.counts),
            "warnings": list(result.warnings)}


def composition_structures(context, formulas: list[str], limit: int = 3) -> list[dict]:
    """Crystals of each formula from prototypes, as library entries with their eight properties.

    Returns one entry per crystal (``_read_entry`` keys plus ``properties``) or, for a formula
    without prototype, one entry with ``error``.
    """
    from app.engine.compositions.structures import structures_for_composition
    from app.engine.core.errors import CrystalDesignerError

    models = _composition_models()
    entries = []
    for done, formula in enumerate(formulas):
        context.cancel.raise_if_cancelled()
        try:
            records = structures_for_composition(formula, models["generator"].predictor, models["prototypes"],
                                                 context.models.predictor, limit=limit, cancel=context.cancel)
        except CrystalDesignerError as error:
            entries.append({"source": f"composition:{formula}", "name": formula, "structure": None, "warnings": [],
                            "error": str(error), "formula": formula, "space_group": None, "n_sites": None,
                            "properties": None})
            continue
        for record in records:
            structure = record["structure"]
            entries.append({"source": f"composition:{formula}:{record['prototype_id']}",
                            "name": f"{formula} ({record['prototype_id']} prototype)", "structure": structure,
                            "warnings": [f"Proposed from the {record['source']}; volume per atom "
                                         f"{record['volume_per_atom']:.2f} Å³ (DING)."],
                            "error": None, "formula": formula, "space_group": space_group_label(structure),
                            "n_sites": len(structure), "properties": record["properties"],
                            "prediction_error": record["error"],
                            "stability": hull_fields(context, structure.composition, record["properties"])})
        context.progress(done + 1, len(formulas), "placing compositions into prototypes")
    return entries
