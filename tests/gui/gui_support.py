"""Helpers shared by the GUI tests (importable: tests/gui is on sys.path under pytest)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest


def display_available() -> bool:
    """True when a display exists (pytest-xvfb sets DISPLAY before collection) or CI demands one.

    In CI (``CI`` set) this is always True so a missing display fails loudly instead of skipping.
    """
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("CI")
                or shutil.which("Xvfb"))


#: Module-level ``pytestmark`` of every GUI test module.
requires_display = pytest.mark.skipif(
    not display_available(),
    reason="no X display and no Xvfb: install xvfb (./dev setup does) to run the GUI tests")


async def wait_until(predicate, timeout: float = 60.0, interval: float = 0.02, message: str = ""):
    """Let the event loop run until ``predicate()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message or predicate}")
        await asyncio.sleep(interval)


def drop_files(window, paths) -> None:
    """Simulate the user dropping files/folders from a file manager onto the window."""
    from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(Path(p).resolve())) for p in paths])
    centre = QPoint(window.width() // 2, window.height() // 2)
    enter = QDragEnterEvent(centre, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted(), "the window refused the drag"
    drop = QDropEvent(QPointF(centre), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, drop)
    assert drop.isAccepted(), "the window refused the drop"


def kept_candidate_payload(structure, index: int = 0) -> dict:
    """What the worker streams for a kept candidate, built from a real structure.

    Tiny random models decode nothing usable, so tests that need a kept candidate (viewer,
    export, session) make one from a known crystal with its true density map.
    """
    from app.engine.generation.density import encode
    from app.engine.generation.generator import Candidate
    from app.engine.core.property_table import PROPERTY_KEYS
    from app.worker.jobs import _candidate_payload

    encoded = encode(structure)
    candidate = Candidate(index=index, structure=encoded.structure,
                          formula=encoded.structure.composition.reduced_formula,
                          properties={k: 1.0 + i for i, k in enumerate(PROPERTY_KEYS)},
                          flags={"decoded": True, "distance_ok": True, "charge_balanced": True, "same_formula": True,
                                 "novel": True, "in_windows": True, "unique": True},
                          latent_distance=0.42, kept=True, density=encoded.density.astype("float16"))
    return _candidate_payload(candidate)


def periodic_candidate_payload(structure, index: int = 0) -> dict:
    """A kept candidate of the periodic generator: the standard cell and its true periodic map."""
    from app.engine.generation.generator import Candidate
    from app.engine.generation.periodic_density import encode
    from app.engine.core.property_table import PROPERTY_KEYS
    from app.worker.jobs import _candidate_payload

    maps = encode(structure)
    candidate = Candidate(index=index, structure=maps.structure, formula=maps.structure.composition.reduced_formula,
                          properties={k: 1.0 + i for i, k in enumerate(PROPERTY_KEYS)},
                          flags={"decoded": True, "distance_ok": True, "charge_balanced": True, "same_formula": True,
                                 "novel": True, "in_windows": True, "unique": True},
                          latent_distance=0.42, kept=True, density=maps.density.astype("float16"))
    return _candidate_payload(candidate)
