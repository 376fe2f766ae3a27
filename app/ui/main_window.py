"""The main window: composes the panels as docks, the menus and the status bar; no logic.

The window owns the worker client (started by :meth:`MainWindow.start`, never in the
constructor: models load in the worker) and passes each panel the state it needs.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Callable, Iterable

from PySide6.QtCore import QByteArray, Qt, Signal
from PySide6.QtWidgets import QDockWidget, QFileDialog, QMainWindow, QMenu

from app.engine.core.errors import CrystalDesignerError
from app.settings import AppSettings, save_settings
from app.ui import records as rec
from app.ui.actions import build_actions
from app.ui.autosave import SessionAutosaver
from app.ui.controller import DesignController
from app.ui.file_drop import local_paths
from app.ui.generate_panel import GeneratePanel
from app.ui.library_panel import LibraryPanel
from app.ui.notify import Notifier
from app.ui.plots.menu import PlotsMenu
from app.ui.results_model import ResultsModel
from app.ui.results_panel import ResultsPanel
from app.ui.status import AppStatusBar
from app.ui.targets_panel import TargetsPanel
from app.ui.viewer_panel import ViewerPanel, export_image_dialog
from app.worker.client import WorkerClient

logger = logging.getLogger(__name__)

DEFAULT_SIZE = (1280, 860)


def _spawn(coroutine) -> asyncio.Future:
    """Run a coroutine on the loop; its exceptions go to ``sys.excepthook`` (as qasync's asyncSlot does)."""
    import sys

    task = asyncio.ensure_future(coroutine)

    def done(finished: asyncio.Future) -> None:
        if not finished.cancelled() and finished.exception() is not None:
            error = finished.exception()
            sys.excepthook(type(error), error, error.__traceback__)

    task.add_done_callback(done)
    return task


class MainWindow(QMainWindow):
    """Crystal Designer's window.

    Parameters
    ----------
    settings : AppSettings
        Read at start; updated and saved when the window closes.
    settings_path, session_path : Path, optional
        Where settings and the session are saved (default: the platformdirs locations).
    client_factory : callable, optional
        Builds the :class:`WorkerClient` from ``device`` and its callbacks (tests may wrap it).
    device : str, optional
        Torch device of this run only (``gui --device``); the saved setting is left as it is.

    Signals
    -------
    closed
        After the window closed and released the worker.
    """

    closed = Signal()

    def __init__(self, settings: AppSettings, *, settings_path: Path | None = None,
                 session_path: Path | None = None, client_factory: Callable[..., WorkerClient] = WorkerClient,
                 device: str | None = None, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Crystal Designer")
        self.setObjectName("crystal_designer_main_window")
        self.resize(*DEFAULT_SIZE)
        self.setAcceptDrops(True)
        self.settings = settings
        self._settings_path = settings_path
        self._closing = False

        self.status = AppStatusBar(self)
        self.setStatusBar(self.status)
        self.notifier = Notifier(self, self.status)
        #: The device of this run: ``device`` if given, else the saved setting (never written back).
        self.device = device or settings.device
        self.client = client_factory(self.device, on_state=self.status.set_worker_state,
                                     on_models=self._on_models, on_crash=self._on_worker_crash)
        self.model = ResultsModel(self)
        self.controller = DesignController(self.model, self.client, settings, self)
        self.autosave = SessionAutosaver(self.model, session_path, self)

        self.library = LibraryPanel(self.model)
        self.viewer = ViewerPanel(self.controller.density_for)
        self.targets = TargetsPanel()
        self.generate_panel = GeneratePanel(settings.generation)
        self.results = ResultsPanel(self.model)
        self.setCentralWidget(self.viewer)
        self.docks = {
            "library": self._dock("Library", "library_dock", self.library),
            "generate": self._dock("Generate", "generate_dock", self.generate_panel),
            "targets": self._dock("Targets", "targets_dock", self.targets),
            "results": self._dock("Results", "results_dock", self.results),
        }
        self._place_docks()
        self._add_compositions_dock()

        self.actions, self.menus, self.toolbar = build_actions(self, {
            "open_files": self.open_files_dialog, "open_folder": self.open_folder_dialog,
            "export": self.export_dialog, "quit": self.close, "generate": self.start_generation,
            "cancel": self.controller.cancel_generation, "reset_layout": self.reset_layout,
        })
        self._add_dynamic_menus()
        self._add_predictor_menu()
        self.plots = PlotsMenu(self)
        self._connect()
        self._sized_docks = False
        self._restore_layout()
        self.actions["cancel"].setEnabled(False)

    # -- composition -------------------------------------------------------------------------

    def _dock(self, title: str, name: str, widget) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)  # saveState/restoreState find docks by object name
        dock.setWidget(widget)
        return dock

    def _place_docks(self) -> None:
        """The default layout: library left, generate and targets (tabs) right, results below."""
        areas = {"library": Qt.DockWidgetArea.LeftDockWidgetArea, "generate": Qt.DockWidgetArea.RightDockWidgetArea,
                 "targets": Qt.DockWidgetArea.RightDockWidgetArea, "results": Qt.DockWidgetArea.BottomDockWidgetArea}
        for key, area in areas.items():
            self.docks[key].setFloating(False)
            self.addDockWidget(area, self.docks[key])
            self.docks[key].show()
        self.tabifyDockWidget(self.docks["generate"], self.docks["targets"])
        self.docks["generate"].raise_()

    def _add_compositions_dock(self) -> None:
        """DING compositions: a tab beside Generate."""
        from app.ui.compositions_panel import CompositionsPanel

        self.compositions = CompositionsPanel(self.controller)
        self.docks["compositions"] = self._dock("Compositions", "compositions_dock", self.compositions)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.docks["compositions"])
        self.tabifyDockWidget(self.docks["generate"], self.docks["compositions"])
        self.docks["generate"].raise_()

    def _add_dynamic_menus(self) -> None:
        self.recent_menu = QMenu("Open &recent", self)
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self.menus["&File"].insertMenu(self.actions["export"], self.recent_menu)
        export_image = self.menus["&File"].addAction("Export &image…")
        export_image.setStatusTip("Save the 3-D view as a PNG at a chosen size")
        export_image.triggered.connect(lambda _checked=False: export_image_dialog(self.viewer, self))
        self.menus["&File"].insertAction(self.actions["quit"], export_image)
        view = self.menus["&View"]
        view.addSeparator()
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())

    def _add_predictor_menu(self) -> None:
        """Predictor menu: which property model predicts the structures opened from now on."""
        from PySide6.QtGui import QAction, QActionGroup

        menu = self.menuBar().addMenu("&Predictor")
        group = QActionGroup(self)
        group.setExclusive(True)
        self.predictor_actions: dict[str, QAction] = {}
        for name, text, tip in (
            ("cgcnn", "&CGCNN (crystal graphs)", "Predict with the CGCNN graph models (more accurate)"),
            ("pointnet", "&PointNet (point clouds)", "Predict with the PointNet point-cloud model (faster)"),
        ):
            action = QAction(text, self, checkable=True)
            action.setStatusTip(tip)
            action.setChecked(self.settings.predictor == name)
            action.triggered.connect(lambda _checked=False, n=name: self.set_predictor(n))
            group.addAction(action)
            menu.addAction(action)
            self.predictor_actions[name] = action

    def set_predictor(self, name: str) -> None:
        """Predict structures opened from now on with ``name`` (``cgcnn`` or ``pointnet``)."""
        self.settings.predictor = name
        self.predictor_actions[name].setChecked(True)
        self.status.showMessage(f"Structures opened from now on are predicted with {name}; "
                                "re-open a file to predict it again.", 8000)

    def _connect(self) -> None:
        c = self.controller
        self.library.selection_changed.connect(self._on_library_selection)
        self.library.open_files_requested.connect(self.open_files_dialog)
        self.library.open_folder_requested.connect(self.open_folder_dialog)
        self.library.remove_requested.connect(self.remove_records)
        self.results.current_changed.connect(self.viewer.show_record)
        self.viewer.pick_message.connect(self.status.showMessage)
        self.results.export_requested.connect(self.export_dialog)
        self.targets.windows_changed.connect(self.results.set_windows)
        self.generate_panel.generate_requested.connect(self.start_generation)
        self.generate_panel.cancel_requested.connect(c.cancel_generation)
        c.status_message.connect(self.notifier.status)
        c.error_reported.connect(self.notifier.error)
        c.structures_arrived.connect(self._on_structures_arrived)
        c.generation_started.connect(self._on_generation_started)
        c.generation_progress.connect(self.generate_panel.set_progress)
        c.generation_relaxing.connect(self.generate_panel.set_relaxing)
        c.generation_finished.connect(self._on_generation_finished)
        c.models_changed.connect(self.status.set_models)

    def _restore_layout(self) -> None:
        layout = self.settings.window
        if layout.geometry:
            self.restoreGeometry(QByteArray.fromBase64(layout.geometry.encode("ascii")))
        if layout.state and not self.restoreState(QByteArray.fromBase64(layout.state.encode("ascii"))):
            logger.info("The saved window layout does not fit this version; using the default layout.")

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if not self._sized_docks:
            # Dock sizes only take effect once the window has its size, i.e. when first shown.
            self._sized_docks = True
            if not self.settings.window.state:
                self._size_docks()

    def _size_docks(self) -> None:
        self.resizeDocks([self.docks["library"], self.docks["generate"]], [370, 330], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["results"]], [280], Qt.Orientation.Vertical)

    def reset_layout(self) -> None:
        self._place_docks()
        self._size_docks()

    # -- start -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker process (models load there, in the background)."""
        self.client.start()

    async def start_session(self, open_paths: Iterable[str] | None = None, restore: bool = True,
                            examples: bool = True) -> list[rec.CrystalRecord]:
        """Restore the last session, open ``open_paths``, or else open the bundled examples.

        Returns
        -------
        list of CrystalRecord
            The library records shown first (opened paths, else restored, else examples).
        """
        from app.session import load_session

        shown: list[rec.CrystalRecord] = []
        snapshot = load_session(self.autosave.path) if restore else None
        if snapshot is not None and not snapshot.empty:
            shown = await self.controller.restore(snapshot.library, snapshot.candidates)
        open_paths = list(open_paths or [])
        if open_paths:
            shown = await self.open_paths(open_paths)
        elif not shown and examples:
            from app.engine.core.paths import examples_dir

            shown = await self.open_paths(sorted(str(p) for p in examples_dir().glob("*.cif")))
        return shown

    async def open_paths(self, paths: Iterable[str]) -> list[rec.CrystalRecord]:
        """Open files/folders (see :meth:`DesignController.open_paths`); selects the first if none is."""
        records = await self.controller.open_paths(paths)
        if records and not self.library.selected_records():
            first = next((r for r in records if r.has_structure), records[0])
            self.library.select([first])
        return records

    # -- slots -------------------------------------------------------------------------------

    def _on_models(self, info: dict) -> None:
        self.status.set_models(info)
        self.generate_panel.set_available(info.get("generator_error") is None, info.get("generator_error"))
        self.targets.set_decile_edges(info.get("decile_edges"))
        if info.get("predictor_error"):
            self.notifier.error("Property models not available", info["predictor_error"])

    def _on_worker_crash(self, message: str) -> None:
        self.notifier.error("Inference worker restarted", message)

    def _on_library_selection(self, records: list) -> None:
        self.generate_panel.set_selection(records)
        self.viewer.show_record(records[0] if records else None)

    def remove_records(self, records: list) -> None:
        if self.viewer.record in records:
            self.viewer.show_record(None)
        self.controller.remove(records)

    def _on_structures_arrived(self, records: list) -> None:
        for record in records:
            self.viewer.refresh(record)
        self.generate_panel.set_selection(self.library.selected_records())

    def _on_generation_started(self, total: int) -> None:
        self.generate_panel.set_running(True, total)
        self.actions["generate"].setEnabled(False)
        self.actions["cancel"].setEnabled(True)

    def _on_generation_finished(self, funnel, note: str) -> None:
        self.generate_panel.set_running(False)
        self.actions["generate"].setEnabled(True)
        self.actions["cancel"].setEnabled(False)
        if funnel is not None:
            self.generate_panel.show_funnel(funnel)
        self.generate_panel.set_status(note)

    def start_generation(self) -> asyncio.Future | None:
        """Generate with the panels' settings (returns the running task)."""
        if self.controller.generating:
            return None
        missing = self.generate_panel.missing_input()
        if missing:
            self.notifier.status(missing)
            return None
        panel = self.generate_panel
        try:
            settings = panel.generation_settings(self.targets.generation_windows(), **self.targets.condition())
        except CrystalDesignerError as error:
            self.controller.report("Cannot generate", str(error))
            return None
        return _spawn(self.controller.generate(settings, panel.base, panel.second))

    def open_files_dialog(self) -> None:
        from app.engine.io.crystal_io import file_dialog_patterns

        patterns = file_dialog_patterns()
        paths, _ = QFileDialog.getOpenFileNames(self, "Open crystal files", self.settings.last_open_folder,
                                                f"Crystal files ({patterns});;All files (*)")
        if paths:
            _spawn(self.open_paths(paths))

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of crystal files",
                                                  self.settings.last_open_folder)
        if folder:
            _spawn(self.open_paths([folder]))

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_files:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _checked=False, p=path: _spawn(self.open_paths([p])))
        if not self.settings.recent_files:
            self.recent_menu.addAction("(none)").setEnabled(False)

    def export_dialog(self) -> None:
        records = self.results.records_to_export()
        if not records:
            self.notifier.status("Nothing to export: the table shows no rows.")
            return
        folder = QFileDialog.getExistingDirectory(self, f"Export {len(records)} rows to folder",
                                                  self.settings.last_export_folder)
        if folder:
            _spawn(self.export_to(records, Path(folder)))

    async def export_to(self, records: list[rec.CrystalRecord], folder: Path):
        """Export and tell the user where the files went (and what was renamed or skipped)."""
        report = await self.controller.export(records, folder, relaxed=not self.results.export_unrelaxed.isChecked())
        if report is not None:
            self.notifier.info("Export finished", report.summary())
        return report

    # -- drag and drop -----------------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if local_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = local_paths(event.mimeData())
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.last_drop_task = _spawn(self.open_paths(paths))

    # -- closing -----------------------------------------------------------------------------

    def closeEvent(self, event) -> None:  # noqa: N802
        if self._closing:
            event.accept()
            return
        self._closing = True
        self.settings.generation = self.generate_panel.defaults()
        self.settings.window.geometry = bytes(self.saveGeometry().toBase64()).decode("ascii")
        self.settings.window.state = bytes(self.saveState().toBase64()).decode("ascii")
        save_settings(self.settings, self._settings_path)
        self.autosave.flush()
        self.notifier.close_all()
        self.viewer.close_plotter()
        self.client.close()
        event.accept()
        self.closed.emit()
