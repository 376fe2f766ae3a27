"""Autosave of the session after every change of the records (debounced, atomic)."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, QTimer

from app.session import SessionSnapshot, save_session
from app.ui.records import LIBRARY, to_session
from app.ui.results_model import ResultsModel

logger = logging.getLogger(__name__)

#: Changes arrive in bursts (a batch of candidates, a folder of files); one write per burst.
SAVE_DELAY_MS = 250


class SessionAutosaver(QObject):
    """Writes the session shortly after each change of ``model`` (and at :meth:`flush`)."""

    def __init__(self, model: ResultsModel, path: Path | None = None, parent=None) -> None:
        super().__init__(parent)
        self._model = model
        self._path = path
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(SAVE_DELAY_MS)
        self._timer.timeout.connect(self.save_now)
        model.records_changed.connect(self._timer.start)
        self.saves = 0

    @property
    def path(self) -> Path | None:
        """The session file (None: the default location)."""
        return self._path

    def snapshot(self) -> SessionSnapshot:
        library, candidates = [], []
        for record in self._model.records:
            data = to_session(record)
            if data is not None:
                (library if record.origin == LIBRARY else candidates).append(data)
        return SessionSnapshot(library, candidates)

    def save_now(self) -> None:
        self._timer.stop()
        if save_session(self.snapshot(), self._path):
            self.saves += 1

    def flush(self) -> None:
        """Save now if a change is waiting (window closing)."""
        if self._timer.isActive():
            self.save_now()
