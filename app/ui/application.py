"""Running the GUI: QApplication, qasync event loop, exception hook, optional screenshot."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

#: Longest wait for files to load and predict before a screenshot is taken anyway (s).
SCREENSHOT_TIMEOUT_S = 180.0


async def capture_when_ready(window, shown: list, path: Path) -> None:
    """Save a picture of the window once the first shown structure is drawn with its density."""
    from PySide6.QtWidgets import QApplication

    first = next((r for r in shown if r.has_structure), None)
    if first is not None:
        window.library.select([first])
    await window.viewer.wait_density()
    for _ in range(5):  # let layouts settle and VTK draw the final scene
        QApplication.processEvents()
        await asyncio.sleep(0.05)
    window.viewer.plotter.render()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(path)):
        logger.error("The screenshot could not be written to %s.", path)
    else:
        logger.info("Screenshot saved to %s", path)


def _close_on_ctrl_c(window) -> None:
    """Ctrl+C in the terminal closes the window in order (saving settings, stopping the worker).

    Python runs signal handlers only between bytecodes, which never happens while Qt waits for
    events; a quarter-second no-op timer gives it those chances.
    """
    import signal

    from PySide6.QtCore import QTimer

    signal.signal(signal.SIGINT, lambda *_args: window.close())
    timer = QTimer(window)
    timer.timeout.connect(lambda: None)
    timer.start(250)


def run_gui(open_paths: list[str] | None = None, screenshot: str | None = None, device: str | None = None) -> int:
    """Open the main window and run until it closes.

    Parameters
    ----------
    open_paths : list of str, optional
        Files/folders to open (besides the restored session).
    screenshot : str, optional
        Save the window as PNG once the files are loaded and predicted, then exit.
    device : str, optional
        Overrides the settings' device for this run.

    Returns
    -------
    int
        Exit status.
    """
    import qasync
    from PySide6.QtWidgets import QApplication

    from app.settings import load_settings
    from app.ui.main_window import MainWindow
    from app.ui.notify import install_excepthook

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Crystal Designer")
    app.setOrganizationName("crystal-designer")
    app.setQuitOnLastWindowClosed(False)  # the loop ends when the window's `closed` fires
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)

    window = MainWindow(load_settings(), device=device)  # a run's --device is not saved
    uninstall_hook = install_excepthook(window.notifier.report_exception)
    _close_on_ctrl_c(window)
    status = {"code": 0}

    async def main() -> None:
        closed = asyncio.Event()
        window.closed.connect(closed.set)
        window.show()
        window.start()
        try:
            shown = await window.start_session(open_paths)
            if screenshot:
                await asyncio.wait_for(capture_when_ready(window, shown, Path(screenshot)), SCREENSHOT_TIMEOUT_S)
                window.close()
        except asyncio.TimeoutError:
            logger.error("Timed out waiting for the structures before the screenshot.")
            status["code"] = 1
            window.close()
        await closed.wait()

    try:
        with loop:
            loop.run_until_complete(main())
    finally:
        uninstall_hook()
    return status["code"]
