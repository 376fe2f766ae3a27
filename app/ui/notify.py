"""Telling the user: non-blocking message boxes, status-bar notes, and the exception hook."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QStatusBar, QWidget

logger = logging.getLogger(__name__)

#: More open message boxes than this: further problems go to the status bar only.
MAX_OPEN_BOXES = 3
STATUS_TIMEOUT_MS = 10_000


class Notifier:
    """Shows problems in a window-modal, non-blocking message box and in the status bar.

    Non-blocking (``open``, never ``exec``) so that an error never freezes the event loop that
    is still streaming results, and tests are never stuck on a dialog.
    """

    def __init__(self, parent: QWidget, status_bar: QStatusBar) -> None:
        self._parent = parent
        self._status_bar = status_bar
        self._open: list[QMessageBox] = []
        self.history: list[tuple[str, str]] = []

    def status(self, text: str, timeout_ms: int = STATUS_TIMEOUT_MS) -> None:
        self._status_bar.showMessage(text, timeout_ms)

    def error(self, title: str, message: str) -> None:
        self._show(QMessageBox.Icon.Warning, title, message)

    def info(self, title: str, message: str) -> None:
        self._show(QMessageBox.Icon.Information, title, message)

    def _show(self, icon, title: str, message: str) -> None:
        self.history.append((title, message))
        self.status(f"{title}: {message.splitlines()[0] if message else ''}")
        self._open = [box for box in self._open if box.isVisible()]
        if len(self._open) >= MAX_OPEN_BOXES:
            return
        box = QMessageBox(icon, title, message, QMessageBox.StandardButton.Ok, self._parent)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.open()
        self._open.append(box)

    def close_all(self) -> None:
        for box in self._open:
            if box.isVisible():
                box.close()
        self._open.clear()

    def report_exception(self, kind, value, trace) -> None:
        """Exception hook body: log the traceback, tell the user in one line."""
        logger.error("Unexpected error:\n%s", "".join(traceback.format_exception(kind, value, trace)))
        self.error("Unexpected error", f"{kind.__name__}: {value}\n\nThe details are in the log. "
                                       "The app keeps running; please report this.")


def install_excepthook(report: Callable) -> Callable[[], None]:
    """Route uncaught exceptions (e.g. from qasync ``asyncSlot`` tasks) to ``report``.

    Returns
    -------
    callable
        Restores the previous hook.
    """
    previous = sys.excepthook

    def hook(kind, value, trace) -> None:
        if issubclass(kind, KeyboardInterrupt):
            previous(kind, value, trace)
            return
        try:
            report(kind, value, trace)
        except Exception:  # reporting must never raise from inside the hook
            previous(kind, value, trace)

    sys.excepthook = hook

    def uninstall() -> None:
        sys.excepthook = previous

    return uninstall
