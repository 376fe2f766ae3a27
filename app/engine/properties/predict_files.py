"""Files in, prediction records out: the batch job behind ``crystal-designer predict``.

Reading CIFs and building neighbour graphs costs more than the models on a CPU, so for many
files that work is spread over worker processes; the models then run on whole batches.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from app.engine.core.cancel import CancelToken, ProgressCallback
from app.engine.io.crystal_io import LoadedCrystal, ReadLimits, expand_paths, read_crystal_file
from app.engine.core.errors import CrystalDesignerError, StructureReadError
from app.engine.properties.predictor import PropertyPredictor, graph_for_prediction
from app.engine.core.property_table import PROPERTY_KEYS
from app.engine.core.threads import available_cores

logger = logging.getLogger(__name__)

#: Below this many files a process pool costs more than it saves.
PARALLEL_THRESHOLD = 64


def _read_with_graphs(path: Path, limits: ReadLimits,
                      featurise: Callable = graph_for_prediction) -> list[tuple[LoadedCrystal, object]]:
    """Read one file and build the model input (``featurise``: graph or point cloud) of each
    structure in it (runs in worker processes)."""
    out = []
    for crystal in read_crystal_file(path, limits):
        graph: object = None
        if crystal.ok and crystal.structure.is_ordered:  # disordered ones are ordered with the models later
            try:
                graph = featurise(crystal.structure)
            except StructureReadError as error:
                graph = error
        out.append((crystal, graph))
    return out


def _pool_context():
    # fork shares the already imported pymatgen with the workers (no ~1 s re-import each); the
    # workers never touch torch (predict_files forks them before it loads the models).
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def iter_with_graphs(
    paths: Iterable[str | Path],
    limits: ReadLimits | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    featurise: Callable = graph_for_prediction,
) -> Iterator[tuple[LoadedCrystal, object]]:
    """Read every crystal under ``paths`` and build its graph, yielding as files are done.

    Files are read in worker processes when there are many; they start at the first ``next``,
    so a caller can load its models while the workers read.

    Yields
    ------
    (LoadedCrystal, CrystalGraph | StructureReadError | None)
        One entry per structure (or per unreadable file), in input order.
    """
    limits = limits or ReadLimits()
    files, problems = expand_paths(paths)
    yield from ((p, None) for p in problems)
    workers = workers or min(available_cores(), 8)
    if len(files) >= PARALLEL_THRESHOLD and workers > 1:
        with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
            chunks = pool.map(_read_with_graphs, files, [limits] * len(files), [featurise] * len(files),
                              chunksize=16)
            for done, chunk in enumerate(chunks, 1):
                if cancel is not None and cancel.cancelled:
                    pool.shutdown(cancel_futures=True)
                    cancel.raise_if_cancelled()
                yield from chunk
                if progress is not None:
                    progress(done, len(files), "reading structures")
    else:
        for done, path in enumerate(files, 1):
            if cancel is not None:
                cancel.raise_if_cancelled()
            yield from _read_with_graphs(path, limits, featurise)
            if progress is not None:
                progress(done, len(files), "reading structures")


def read_with_graphs(paths: Iterable[str | Path], limits: ReadLimits | None = None, workers: int | None = None,
                     progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                     ) -> list[tuple[LoadedCrystal, object]]:
    """All of :func:`iter_with_graphs` as a list."""
    return list(iter_with_graphs(paths, limits, workers, progress, cancel))


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


def predict_files(
    paths: Sequence[str | Path],
    predictor: PropertyPredictor | Callable[[], PropertyPredictor],
    limits: ReadLimits | None = None,
    workers: int | None = None,
    batch_size: int = 128,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    featurise: Callable | None = None,
    on_records: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Prediction records for every structure under ``paths`` (see :func:`prediction_record`).

    Each record's ``model`` names the predictor that made it (``cgcnn``, ``pointnet``).
    ``featurise`` (structure -> model input) defaults to the predictor's own ``featurise``;
    pass it when ``predictor`` is a loader of a predictor other than CGCNN's.

    ``predictor`` may be a function that loads one: it is then called once the file readers have
    started, so loading the models overlaps with reading (whole-process start-up is ~1.5 s).
    Batches are predicted while later files are still being read.

    ``on_records``, when given, is called with each run of records as soon as they are complete
    (every record exactly once, in order), e.g. to place them on the hull while later files are
    still being read rather than all at the end.
    """
    # The model input of the predictor (graph for CGCNN, point cloud for PointNet), built by the readers.
    featurise = featurise or getattr(predictor, "featurise", graph_for_prediction)
    entries = iter_with_graphs(paths, limits, workers, None, cancel, featurise)
    records: list[dict] = []
    pending: list[tuple[int, LoadedCrystal, object]] = []
    first = next(entries, None)  # starts the readers
    if not isinstance(predictor, PropertyPredictor):
        predictor = predictor()
    _leave_cores_to_readers(paths, workers)
    model_name = getattr(predictor, "model_name", "cgcnn")
    reported = 0
    for entry in itertools.chain([first] if first is not None else [], entries):
        crystal, graph = entry
        records.append(_disordered_record(predictor, crystal) if _is_disordered(crystal)
                       else _unpredictable_record(crystal, graph))
        if records[-1] is None:
            pending.append((len(records) - 1, crystal, graph))
        if len(pending) >= batch_size:
            _predict_pending(predictor, pending, records, batch_size)
            reported = _report(records, reported, model_name, on_records)
            if progress is not None:
                progress(len(records), len(records), "predicting properties")
        if cancel is not None:
            cancel.raise_if_cancelled()
    _predict_pending(predictor, pending, records, batch_size)
    _report(records, reported, model_name, on_records)
    if progress is not None:
        progress(len(records), len(records), "predicting properties")
    return records


def _report(records: list[dict], reported: int, model_name: str,
            on_records: Callable[[list[dict]], None] | None) -> int:
    """Finish the records completed since ``reported`` (their ``model``) and hand them to
    ``on_records``; returns the new count of finished records."""
    done = records[reported:]
    for record in done:
        record["model"] = model_name
    if on_records is not None and done:
        on_records(done)
    return len(records)


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


def _leave_cores_to_readers(paths, workers: int | None) -> None:
    """While reader processes fill every core, the models run on one thread: more threads only
    spin against the readers (measured: 3x the CPU time for the same predictions)."""
    import torch

    files, _ = expand_paths(paths)
    readers = workers or min(available_cores(), 8)
    if len(files) >= PARALLEL_THRESHOLD and readers > 1:
        torch.set_num_threads(max(1, available_cores() - readers + 1))


def _unpredictable_record(crystal: LoadedCrystal, graph) -> dict | None:
    """The error record of an entry that cannot be predicted, None for one that can."""
    if not crystal.ok:
        return prediction_record(crystal, None, crystal.error or "The file could not be read.")
    if isinstance(graph, CrystalDesignerError):
        return prediction_record(crystal, None, str(graph))
    if graph is None:
        return prediction_record(crystal, None, "The structure could not be turned into a graph.")
    return None


def _predict_pending(predictor: PropertyPredictor, pending: list, records: list, batch_size: int) -> None:
    """Predict the queued ``(record index, crystal, graph)`` entries into ``records``; empties the queue."""
    if not pending:
        return
    raw = predictor.predict_graphs([graph for _, _, graph in pending], batch_size)
    for row, (i, crystal, _) in enumerate(pending):
        prediction = predictor.assemble(crystal.structure, {name: out[row] for name, out in raw.items()})
        records[i] = prediction_record(crystal, prediction.values, None)
    pending.clear()
