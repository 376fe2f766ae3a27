"""What the user's actions do: open, predict, generate, cancel, show density, export, remove.

The controller turns actions into worker jobs and their replies into records of the shared
:class:`~app.ui.results_model.ResultsModel`. It owns no widgets: panels call its coroutines and
listen to its signals, so it can be driven directly from tests.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Iterable

import numpy as np
from PySide6.QtCore import QObject, Signal

from app.engine.core.errors import CancelledError, CrystalDesignerError
from app.engine.generation.settings import MODES_WITH_SECOND, GenerationSettings
from app.settings import AppSettings
from app.ui import records as rec
from app.ui.export import ExportReport, export_records
from app.ui.records import CrystalRecord
from app.ui.results_model import ResultsModel
from app.ui.scene import DensityView, candidate_density_view
from app.worker.client import Job, WorkerClient
from app.worker.errors import WorkerCrashedError

logger = logging.getLogger(__name__)

#: Latent samples per worker batch. Smaller than the engine's default (32) so progress updates
#: and cancellation take ~1 s on a CPU instead of ~2–3 s; the batched speed is nearly the same.
GUI_BATCH_SIZE = 16
#: Rejected candidates listed per run (all are counted in the funnel); bounds memory on long runs.
MAX_REJECTED_ROWS = 10_000
_DENSITY_CACHE_SIZE = 32


class DesignController(QObject):
    """Coordinates the worker, the records and the session.

    Parameters
    ----------
    model : ResultsModel
        The store of records.
    client : WorkerClient
        Not started yet; :meth:`start` starts it.
    settings : AppSettings
        Updated in place (recent files, folders); saving it is the window's job.

    Signals
    -------
    status_message(str)
        A short note for the status bar.
    error_reported(str, str)
        Title and message of something the user must know (shown in a message box).
    structures_arrived(list)
        Records whose structure was just read (the viewer may redraw).
    generation_started(int), generation_progress(int, int, int), generation_finished(object, str)
        Total; done, total, kept; funnel dict (None if interrupted) and a note.
    """

    status_message = Signal(str)
    error_reported = Signal(str, str)
    structures_arrived = Signal(list)
    generation_started = Signal(int)
    generation_progress = Signal(int, int, int)
    generation_finished = Signal(object, str)
    models_changed = Signal(dict)
    #: Relaxation of the kept candidates: structures done, total, the engine's message.
    generation_relaxing = Signal(int, int, str)

    def __init__(self, model: ResultsModel, client: WorkerClient, settings: AppSettings, parent=None) -> None:
        super().__init__(parent)
        self.model = model
        self.client = client
        self.settings = settings
        self._generation: Job | None = None
        self._density_cache: dict[int, DensityView] = {}

    # -- opening and predicting --------------------------------------------------------------

    async def open_paths(self, paths: Iterable[str | Path]) -> list[CrystalRecord]:
        """Read files/folders into the library and predict them (bad files become red entries).

        Returns
        -------
        list of CrystalRecord
            The library records of this batch, in reading order.
        """
        paths = [str(Path(p).expanduser()) for p in paths]
        if not paths:
            return []
        for path in paths:
            self.settings.remember_recent(path)
        self.settings.last_open_folder = str(Path(paths[-1]).parent)
        batch: list[CrystalRecord] = []
        self.status_message.emit(f"Reading {len(paths)} path{'s' if len(paths) > 1 else ''}…")

        def on_items(entries: list[dict]) -> None:
            batch.extend(self._take_read_entries(entries))

        def on_progress(done: int, total: int, message: str) -> None:
            self.status_message.emit(f"{message} ({done}/{total})" if message else f"{done}/{total}")

        try:
            predictions = await self.client.predict(paths, progress=on_progress, on_items=on_items,
                                                    predictor=self.settings.predictor)
        except CrystalDesignerError as error:  # includes a crashed worker
            for record in batch:
                if record.status == rec.PREDICTING:
                    record.prediction_error = f"interrupted ({error})"
                    record.status = rec.READY
            self.model.refresh(batch)
            self._report_job_error("Prediction interrupted", error)
            return batch
        by_source = {p["source"]: p for p in predictions}
        for record in batch:
            if record.source in by_source:
                rec.apply_prediction(record, by_source[record.source])
        self.model.refresh(batch)
        await self.refresh_models()
        failed = sum(1 for r in batch if r.error)
        self.status_message.emit(f"Loaded {len(batch) - failed} structure{'s' if len(batch) - failed != 1 else ''}"
                                 + (f", {failed} could not be read" if failed else "") + ".")
        return batch

    def _take_read_entries(self, entries: list[dict]) -> list[CrystalRecord]:
        """New or refreshed library records for read entries (re-opening a file updates its entry)."""
        added, updated = [], []
        for entry in entries:
            existing = self.model.find_source(entry["source"])
            if existing is None:
                added.append(rec.library_record(entry))
                continue
            fresh = rec.library_record(entry)
            for name in ("structure", "formula", "space_group", "n_sites", "warnings", "error", "status"):
                setattr(existing, name, getattr(fresh, name))
            existing.properties, existing.prediction_error = {}, None
            self._density_cache.pop(existing.uid, None)
            updated.append(existing)
        self.model.add(added)
        self.model.refresh(updated)
        arrived = added + updated
        self.structures_arrived.emit(arrived)
        return arrived

    async def refresh_models(self) -> None:
        """Tell the window what the worker has loaded by now (``models_changed``); models such as
        PointNet or the reference hull load on first use."""
        try:
            info = await self.client.refresh_models()
        except CrystalDesignerError as error:  # the worker stopped or restarted: it reports again itself
            logger.info("Model description not refreshed: %s", error)
            return
        self.models_changed.emit(info)

    # -- session -----------------------------------------------------------------------------

    async def restore(self, library: list[dict], candidates: list[dict]) -> list[CrystalRecord]:
        """Show a saved session at once, then re-read its library files in the worker.

        Entries saved before their prediction finished (the app was killed) are predicted again.
        """
        records = [rec.library_from_session(d) for d in library]
        self.model.add(records + [rec.candidate_from_session(d) for d in candidates])
        unpredicted = list(dict.fromkeys(r.path for r in records if r.status == rec.PREDICTING and r.path))
        paths = [p for p in dict.fromkeys(r.path for r in records if r.path) if p not in unpredicted]
        if unpredicted:
            await self.open_paths(unpredicted)
        if not paths:
            return records
        by_source = {r.source: r for r in records}
        by_path: dict[str, list[CrystalRecord]] = {}
        for record in records:
            by_path.setdefault(record.path, []).append(record)

        def on_items(entries: list[dict]) -> None:
            touched = []
            for entry in entries:
                targets = [by_source[entry["source"]]] if entry["source"] in by_source else \
                    (by_path.get(entry["source"], []) if entry.get("error") else [])
                for record in targets:
                    record.structure = entry.get("structure")
                    record.warnings = list(entry.get("warnings") or record.warnings)
                    if entry.get("error"):
                        record.error, record.status = entry["error"], rec.FAILED
                    touched.append(record)
            self.model.refresh(touched)
            self.structures_arrived.emit(touched)

        try:
            await self.client.read(paths, on_items=on_items)
        except CrystalDesignerError as error:
            self._report_job_error("Session files not re-read", error)
        return records

    # -- generation --------------------------------------------------------------------------

    @property
    def generating(self) -> bool:
        return self._generation is not None

    async def generate(self, settings: GenerationSettings, base: CrystalRecord | None,
                       second: CrystalRecord | None) -> dict | None:
        """Run one generation; candidates stream into the table.

        Parameters
        ----------
        settings : GenerationSettings
            Built (and so checked) by the Generate panel; sent to the worker as it is, in the
            window's smaller batches.

        Returns
        -------
        dict or None
            The funnel counts, or None if cancelled or failed (already reported).
        """
        if self._generation is not None:
            self.status_message.emit("A generation is already running.")
            return None
        settings = dataclasses.replace(settings, batch_size=GUI_BATCH_SIZE)
        mode = settings.mode
        base_structure = base.get_structure() if base is not None and mode != "random" else None
        second_structure = second.get_structure() if second is not None and mode in MODES_WITH_SECOND else None
        base_name = base.name if base_structure is not None else None
        self._drop_rejected_candidates()
        counts = {"done": 0, "kept": 0, "rejected_rows": 0}
        total = settings.count

        def on_items(payloads: list[dict]) -> None:
            new = []
            for payload in payloads:
                counts["kept"] += bool(payload["kept"])
                if not payload["kept"]:
                    if counts["rejected_rows"] >= MAX_REJECTED_ROWS:
                        continue
                    counts["rejected_rows"] += 1
                new.append(rec.candidate_record(payload, base_name))
            self.model.add(new)

        def on_progress(done: int, total_: int, message: str) -> None:
            if message.startswith("relaxing"):  # the last stages: CHGNet relaxation of the kept candidates
                self.generation_relaxing.emit(done, total_, message)
                return
            counts["done"] = done
            self.generation_progress.emit(done, total_, counts["kept"])

        self.generation_started.emit(total)
        self._generation = self.client.generate(settings, base=base_structure, second=second_structure,
                                                progress=on_progress, on_items=on_items)
        try:
            result = await self._generation
        except CancelledError:
            note = f"Cancelled after {counts['done']:,} of {total:,} samples; {counts['kept']:,} kept."
            self.generation_finished.emit(None, note)
            self.status_message.emit(note)
            return None
        except CrystalDesignerError as error:  # includes a crashed worker and missing models
            self.generation_finished.emit(None, f"Stopped: {error}")
            self._report_job_error("Generation failed", error)
            return None
        else:
            # Still "generating" until the funnel is out: a run is over when its results are shown.
            funnel = dict(result["funnel"])
            if "sun" in result:
                funnel["sun"] = int(result["sun"])  # stable + unique + novel, shown under the funnel
            note = f"Done: {funnel.get('unique', counts['kept']):,} of {total:,} samples kept"
            note += f", {funnel['sun']:,} stable, unique and novel." if "sun" in funnel else "."
            await self.refresh_models()
            if counts["rejected_rows"] >= MAX_REJECTED_ROWS:
                note += f" Only the first {MAX_REJECTED_ROWS:,} rejected candidates are listed."
            self.generation_finished.emit(funnel, note)
            self.status_message.emit(note)
            return funnel
        finally:
            self._generation = None

    def cancel_generation(self) -> None:
        if self._generation is not None:
            self._generation.cancel()
            self.status_message.emit("Cancelling the generation…")

    def _drop_rejected_candidates(self) -> None:
        """A new run replaces the previous runs' rejected rows (kept candidates stay)."""
        self.model.remove([r for r in self.model.records if r.is_candidate and not r.kept])

    # -- viewer ------------------------------------------------------------------------------

    async def density_for(self, record: CrystalRecord) -> DensityView:
        """The density map to show with ``record`` (decoded map of a candidate, or encoded).

        Raises
        ------
        StructureReadError
            For structures neither representation holds (disordered; > 20 primitive sites and not
            a cubic cell of ≤ 40 sites).
        """
        cached = self._density_cache.get(record.uid)
        if cached is not None:
            return cached
        structure = record.get_structure()
        view = candidate_density_view(record)
        if view is None:
            if structure is None:
                raise CrystalDesignerError("This entry has no structure.")
            encoded = await self.client.encode_density(structure)
            matrix = encoded.get("lattice_matrix")
            view = DensityView(encoded["density"], tuple(encoded["lattice_abc"]), encoded["structure"],
                               None if matrix is None else np.asarray(matrix, dtype=np.float64), decoded=False)
        if len(self._density_cache) >= _DENSITY_CACHE_SIZE:
            self._density_cache.pop(next(iter(self._density_cache)))
        self._density_cache[record.uid] = view
        return view

    # -- export and removal ------------------------------------------------------------------

    async def export(self, records: list[CrystalRecord], folder: Path, relaxed: bool = True) -> ExportReport | None:
        """Write the records' CIFs (relaxed candidates relaxed, unless ``relaxed`` is False) and summary."""
        self.settings.last_export_folder = str(folder)
        try:
            report = await export_records(records, folder, relaxed=relaxed)
        except CrystalDesignerError as error:
            self._report("Export failed", str(error))
            return None
        self.status_message.emit(report.summary().splitlines()[0])
        return report

    def remove(self, records: list[CrystalRecord]) -> None:
        for record in records:
            self._density_cache.pop(record.uid, None)
        self.model.remove(records)

    # -- helpers -----------------------------------------------------------------------------

    def report(self, title: str, message: str) -> None:
        """Tell the user about a problem (status bar and message box)."""
        self._report(title, message)

    def _report(self, title: str, message: str) -> None:
        logger.warning("%s: %s", title, message)
        self.status_message.emit(f"{title}: {message}")
        self.error_reported.emit(title, message)

    def _report_job_error(self, title: str, error: CrystalDesignerError) -> None:
        if isinstance(error, WorkerCrashedError):
            # The crash itself is announced once (message box) by the window's crash handler.
            logger.warning("%s: %s", title, error)
            self.status_message.emit(f"{title}: {error}")
        else:
            self._report(title, str(error))
