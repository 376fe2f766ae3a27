"""The application shell: exception hook, the ``gui`` command and its screenshot."""

from __future__ import annotations

import os
import subprocess
import sys

from gui_support import requires_display, wait_until

pytestmark = requires_display


def test_errors_in_async_slots_are_reported_not_fatal(window, run):
    import qasync

    from app.ui.notify import install_excepthook

    @qasync.asyncSlot(bool)
    async def broken_slot(_checked):
        raise RuntimeError("boom in a slot")

    uninstall = install_excepthook(window.notifier.report_exception)
    try:
        broken_slot(True)  # as a signal would call it; qasync hands the task's error to sys.excepthook
        run(wait_until(lambda: window.notifier.history, timeout=10, message="the error report"))
    finally:
        uninstall()
    title, message = window.notifier.history[-1]
    assert title == "Unexpected error" and "boom in a slot" in message
    assert "boom in a slot" in window.status.currentMessage()
    assert window.isVisible()


def test_gui_command_opens_files_and_saves_a_screenshot(tiny_models, example, tmp_path):
    shot = tmp_path / "shot.png"
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "app.cli", "gui", "--open", str(example("NaCl")),
                          str(example("TiO2_rutile")), "--screenshot", str(shot)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000
    from PySide6.QtGui import QImage

    image = QImage(str(shot))
    assert image.width() >= 800 and image.height() >= 500


def test_worker_side_modules_import_no_qt(imported_packages):
    """The spawn child imports app.worker.*: it must stay free of Qt, pyvista and qasync."""
    worker = ["app.worker.process", "app.worker.jobs", "app.worker.models", "app.worker.client"]
    assert imported_packages(worker, ("PySide6", "pyvista", "qasync")) == []
