"""Files in, prediction records out: the batch job behind ``crystal-designer predict``.

Reading CIFs and building neighbour graphs costs more than the models on a CPU, so for many
files that work is spread over worker processes; the models then run on whole batches.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

from app.engine.core.cancel import CancelToken, ProgressCallback
from app.engine.io.crystal_io import LoadedCrystal, ReadLimits, expand_paths, read_crystal_file
from app.engine.core.errors import CrystalDesignerError, StructureReadError
from app.engine.properties.predictor import PropertyPredictor, graph_for_prediction
from app.engine.core.property_table import PROPERTY_KEYS

logger = logging.getLogger(__name__)

#: Below this many files a process pool costs more than it saves.
PARALLEL_THRESHOLD = 64


def _read_with_graphs(path: Path, limits: ReadLimits) -> list[tuple[LoadedCrystal, object]]:
    """Read one file and build the graph of each structure in it (runs in worker processes)."""
    out = []
    for crystal in read_crystal_file(path, limits):
        graph: object = None
        if crystal.ok and crystal.structure.is_ordered:  # disordered ones are ordered with the models later
            try:
                graph = graph_for_prediction(crystal.structure)
            except StructureReadError as error:
                graph = error
        out.append((crystal, graph))
    return out


def _pool_context():
    # fork shares the already imported pymatgen with the workers (no ~1 s re-import each); the
    # workers never touch torch, so forking after torch's thread pools exists is harmless here.
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def read_with_graphs(
    paths: Iterable[str | Path],
    limits: ReadLimits | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[tuple[LoadedCrystal, object]]:
    """Read every crystal under ``paths`` and build its graph.

    Returns
    -------
    list of (LoadedCrystal, CrystalGraph | StructureReadError | None)
        One entry per structure (or per unreadable file), in input order.
    """
    limits = limits or ReadLimits()
    files, problems = expand_paths(paths)
    results: list[tuple[LoadedCrystal, object]] = [(p, None) for p in problems]
    workers = workers or max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8))
    if len(files) >= PARALLEL_THRESHOLD and workers > 1:
        with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
            chunks = pool.map(_read_with_graphs, files, [limits] * len(files), chunksize=16)
            for done, chunk in enumerate(chunks, 1):
                if cancel is not None and cancel.cancelled:
                    pool.shutdown(cancel_futures=True)
                    cancel.raise_if_cancelled()
                results.extend(chunk)
                if progress is not None:
                    progress(done, len(files), "reading structures")
    else:
        for done, path in enumerate(files, 1):
            if cancel is not None:
                cancel.raise_if_cancelled()
            results.extend(_read_with_graphs(path, limits))
            if progress is not None:
                progress(done, len(files), "reading structures")
    return results


def prediction_record(crystal: LoadedCrystal, values: dict | None, error: str | None) -> dict:
    """One output record: ``source``, ``formula``, the eight properties (None where undefined),
    ``warnings`` and ``error`` (None when the prediction succeeded)."""
    formula = crystal.structure.composition.reduced_formula if crystal.structure is not None else None
    record: dict = {"source": crystal.source, "formula": formula}
    for key in PROPERTY_KEYS:
        record[key] = None if values is None else values[key]
    record["warnings"] = list(crystal.warnings)
    record["error"] = error
    return record


def _is_disordered(crystal: LoadedCrystal) -> bool:
    return crystal.ok and not crystal.structure.is_ordered


def _disordered_record(predictor: PropertyPredictor, crystal: LoadedCrystal) -> dict:
    """Record of a disordered structure, predicted through an approximation that its warnings name."""
    from app.engine.properties.disorder import predict_disordered

    try:
        result = predict_disordered(predictor, crystal.structure)
    except CrystalDesignerError as error:
        return prediction_record(crystal, None, str(error))
    record = prediction_record(crystal, result.values, None)
    record["warnings"].append(result.note)
    return record


def predict_files(
    paths: Sequence[str | Path],
    predictor: PropertyPredictor,
    limits: ReadLimits | None = None,
    workers: int | None = None,
    batch_size: int = 128,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[dict]:
    """Prediction records for every structure under ``paths`` (see :func:`prediction_record`)."""
    entries = read_with_graphs(paths, limits, workers, progress, cancel)
    predictable = [(i, crystal, graph) for i, (crystal, graph) in enumerate(entries)
                   if crystal.ok and graph is not None and not isinstance(graph, CrystalDesignerError)]
    records: list[dict | None] = [None] * len(entries)
    for i, (crystal, graph) in enumerate(entries):
        if not crystal.ok:
            records[i] = prediction_record(crystal, None, crystal.error or "The file could not be read.")
        elif _is_disordered(crystal):
            records[i] = _disordered_record(predictor, crystal)
        elif isinstance(graph, CrystalDesignerError):
            records[i] = prediction_record(crystal, None, str(graph))
    for start in range(0, len(predictable), batch_size):
        if cancel is not None:
            cancel.raise_if_cancelled()
        chunk = predictable[start : start + batch_size]
        raw = predictor.predict_graphs([graph for _, _, graph in chunk], batch_size)
        for row, (i, crystal, _) in enumerate(chunk):
            prediction = predictor.assemble(crystal.structure, {name: out[row] for name, out in raw.items()})
            records[i] = prediction_record(crystal, prediction.values, None)
        if progress is not None:
            progress(min(start + batch_size, len(predictable)), len(predictable), "predicting properties")
    return records  # type: ignore[return-value]
