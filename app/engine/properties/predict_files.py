"""Files in, prediction records out: the batch job behind ``crystal-designer predict``.

Reading CIFs and building neighbour graphs costs more than the models on a CPU, so for many
files that work is spread over worker processes; the models then run on whole batches.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import sys
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

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
    files, problems = expand_paths(paths)
    with _reader_pool(len(files), workers) as pool:
        yield from _Reading(files, problems, limits or ReadLimits(), pool, progress, cancel, featurise)


@contextlib.contextmanager
def _reader_pool(n_files: int, workers: int | None) -> Iterator[ProcessPoolExecutor | None]:
    """Reader processes for ``n_files`` files (None: read in this process)."""
    workers = _reader_count(workers)
    if n_files < PARALLEL_THRESHOLD or workers < 2:
        yield None
        return
    # Imported once here rather than in every reader after the fork (~0.3 s each): the hull's
    # qhull and pymatgen's element data that finishing steps and the models use.
    import scipy.spatial  # noqa: F401

    with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
        try:
            yield pool
        except BaseException:  # an error or a cancellation: do not read the remaining files first
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _reader_count(workers: int | None) -> int:
    return workers or min(available_cores(), 8)


#: Files per reading task: small enough that the first batch arrives soon, large enough that
#: task overhead stays small.
FILES_PER_TASK = 16


def _read_files(paths: list[Path], limits: ReadLimits, featurise: Callable) -> list[tuple[LoadedCrystal, object]]:
    """:func:`_read_with_graphs` of several files (one task of a reader process)."""
    return [entry for path in paths for entry in _read_with_graphs(path, limits, featurise)]


class _Reading:
    """The entries of ``files`` in order, read by ``pool`` (or here when it is None);
    :attr:`finished` tells when every file has been read."""

    def __init__(self, files: list[Path], problems: list[LoadedCrystal], limits: ReadLimits,
                 pool: ProcessPoolExecutor | None, progress: ProgressCallback | None, cancel: CancelToken | None,
                 featurise: Callable):
        self.files, self.problems, self.limits, self.pool = files, problems, limits, pool
        self.progress, self.cancel, self.featurise = progress, cancel, featurise
        self.tasks: list[Future] = []

    @property
    def finished(self) -> bool:
        return self.pool is None or all(task.done() for task in self.tasks)

    def __iter__(self) -> Iterator[tuple[LoadedCrystal, object]]:
        yield from ((p, None) for p in self.problems)
        files, cancel, progress = self.files, self.cancel, self.progress
        if self.pool is None:
            for done, path in enumerate(files, 1):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                yield from _read_with_graphs(path, self.limits, self.featurise)
                if progress is not None:
                    progress(done, len(files), "reading structures")
            return
        self.tasks = [self.pool.submit(_read_files, files[i:i + FILES_PER_TASK], self.limits, self.featurise)
                      for i in range(0, len(files), FILES_PER_TASK)]
        for number, task in enumerate(self.tasks):
            if cancel is not None and cancel.cancelled:
                self.pool.shutdown(cancel_futures=True)
                cancel.raise_if_cancelled()
            yield from task.result()
            if progress is not None:
                progress(min((number + 1) * FILES_PER_TASK, len(files)), len(files), "reading structures")


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
    finish_records: Callable[[list[dict]], list[dict]] | None = None,
) -> list[dict]:
    """Prediction records for every structure under ``paths`` (see :func:`prediction_record`).

    Each record's ``model`` names the predictor that made it (``cgcnn``, ``pointnet``).
    ``featurise`` (structure -> model input) defaults to the predictor's own ``featurise``;
    pass it when ``predictor`` is a loader of a predictor other than CGCNN's.

    ``predictor`` may be a function that loads one: it is then called once the file readers have
    started, so loading the models overlaps with reading. Batches are predicted while later files
    are still being read.

    ``finish_records``, when given, is a module-level function (it must pickle) that takes a run
    of finished records and returns them with more fields (e.g. the hull's). With reader
    processes it runs in them, after they have read every file, so it overlaps with the models;
    without, in this process. ``on_records``, when given, is called with each run of records as
    soon as it is complete (and finished): every record exactly once, in order.
    """
    # The model input of the predictor (graph for CGCNN, point cloud for PointNet), built by the readers.
    featurise = featurise or getattr(predictor, "featurise", graph_for_prediction)
    files, problems = expand_paths(paths)
    with _reader_pool(len(files), workers) as pool:
        reading = _Reading(files, problems, limits or ReadLimits(), pool, None, cancel, featurise)
        entries = iter(reading)
        first = next(entries, None)  # starts the readers
        if not isinstance(predictor, PropertyPredictor):
            predictor = predictor()
        models = _Models(predictor, batch_size, readers=_reader_count(workers) if pool is not None else 0)
        runs = _FinishedRuns(getattr(predictor, "model_name", "cgcnn"), pool, finish_records, on_records)
        records: list = []
        pending: list[tuple[int, LoadedCrystal, object]] = []
        try:
            for crystal, graph in itertools.chain([first] if first is not None else [], entries):
                records.append(_disordered_record(predictor, crystal) if _is_disordered(crystal, graph)
                               else _unpredictable_record(crystal, graph))
                if records[-1] is None:
                    pending.append((len(records) - 1, crystal, graph))
                if len(pending) >= batch_size:
                    if reading.finished:  # the readers only finish records from now on
                        models.use_every_core()
                    models.predict(pending, records)
                    runs.add(records)
                    if progress is not None:
                        progress(len(records), len(records), "predicting properties")
                if cancel is not None:
                    cancel.raise_if_cancelled()
            models.use_every_core()
            models.predict(pending, records)
            runs.add(records)
            runs.wait(records, cancel)
        finally:
            models.close()
    if progress is not None:
        progress(len(records), len(records), "predicting properties")
    return records


class _FinishedRuns:
    """Hands each run of completed records to ``finish`` (in the reader pool when there is one)
    and then, in order, to ``on_records``."""

    def __init__(self, model_name: str, pool: ProcessPoolExecutor | None,
                 finish: Callable[[list[dict]], list[dict]] | None,
                 on_records: Callable[[list[dict]], None] | None):
        self.model_name, self.pool, self.finish, self.on_records = model_name, pool, finish, on_records
        self.handed_on = 0  # records before this index are finished or being finished
        self.queue: list[tuple[int, Future]] = []  # (index of the first record, its run's future)

    def add(self, records: list) -> None:
        """Hand on the records completed since the last call (records are None until predicted)."""
        end = self.handed_on
        while end < len(records) and records[end] is not None:
            end += 1
        run = records[self.handed_on:end]
        if not run:
            return
        for record in run:
            record["model"] = self.model_name
        start, self.handed_on = self.handed_on, end
        if self.finish is None:
            self._deliver(records, start, run)
        elif self.pool is not None:
            self.queue.append((start, self.pool.submit(self.finish, run)))
            self._collect(records, block=False)
        else:
            self._deliver(records, start, self.finish(run))

    def wait(self, records: list, cancel: CancelToken | None) -> None:
        """Collect every run still being finished, in order."""
        while self.queue:
            if cancel is not None:
                cancel.raise_if_cancelled()
            self._collect(records, block=True)

    def _collect(self, records: list, block: bool) -> None:
        while self.queue and (block or self.queue[0][1].done()):
            start, future = self.queue.pop(0)
            self._deliver(records, start, future.result())
            block = False

    def _deliver(self, records: list, start: int, run: list[dict]) -> None:
        records[start:start + len(run)] = run
        if self.on_records is not None:
            self.on_records(run)


def _is_disordered(crystal: LoadedCrystal, graph) -> bool:
    # The readers build model inputs of ordered structures only: with one, no site check is needed.
    return graph is None and crystal.ok and not crystal.structure.is_ordered


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


def _unpredictable_record(crystal: LoadedCrystal, graph) -> dict | None:
    """The error record of an entry that cannot be predicted, None for one that can."""
    if not crystal.ok:
        return prediction_record(crystal, None, crystal.error or "The file could not be read.")
    if isinstance(graph, CrystalDesignerError):
        return prediction_record(crystal, None, str(graph))
    if graph is None:
        return prediction_record(crystal, None, "The structure could not be turned into a graph.")
    return None


class _Models:
    """Runs the predictor on the queued entries, on one core while reader processes fill the
    others, then on every core.

    Every core means one slice of the batch per core, each predicted in its own thread with one
    torch thread: torch releases the GIL in its kernels, and unlike torch's own thread pool these
    threads wait without spinning, so the readers' remaining work (finishing records) does not
    make them burn CPU (torch threads beside busy readers: 3x the CPU time, measured).
    """

    #: Fewer entries than this per slice are predicted in one piece.
    MIN_SLICE = 16

    def __init__(self, predictor: PropertyPredictor, batch_size: int, readers: int):
        import torch

        self.predictor, self.batch_size = predictor, batch_size
        self.cores = available_cores()
        self.slices = 1
        self.threads = None
        self.torch = torch
        if readers:
            torch.set_num_threads(max(1, self.cores - readers + 1))

    def use_every_core(self) -> None:
        on_cpu = self.torch.device(getattr(self.predictor, "device", "cpu")).type == "cpu"
        if self.slices == 1 and self.cores > 1 and on_cpu and self.torch.get_num_threads() == 1:
            self.slices = self.cores

    def predict(self, pending: list, records: list) -> None:
        """Predict the queued ``(record index, crystal, graph)`` entries into ``records``; empties the queue."""
        if not pending:
            return
        graphs = [graph for _, _, graph in pending]
        slices = min(self.slices, len(graphs) // self.MIN_SLICE) or 1
        if slices == 1:
            raw = self.predictor.predict_graphs(graphs, self.batch_size)
        else:
            if self.threads is None:
                self.threads = ThreadPoolExecutor(self.cores, thread_name_prefix="models")
            size = -(-len(graphs) // slices)
            parts = list(self.threads.map(lambda start: self.predictor.predict_graphs(
                graphs[start:start + size], self.batch_size), range(0, len(graphs), size)))
            raw = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        for row, (i, crystal, _) in enumerate(pending):
            prediction = self.predictor.assemble(crystal.structure, {name: out[row] for name, out in raw.items()})
            records[i] = prediction_record(crystal, prediction.values, None)
        pending.clear()

    def close(self) -> None:
        if self.threads is not None:
            self.threads.shutdown()
