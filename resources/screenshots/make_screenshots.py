"""Regenerate the README screenshots: the window with a density isosurface, the viewer, a powder pattern.

Run under a display from the repository root::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python resources/screenshots/make_screenshots.py

Uses the shipped models through the worker process and a temporary settings/session folder,
so the user's own settings are untouched.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))


async def _wait_for(predicate, timeout: float = 300.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("timed out waiting for the window")
        await asyncio.sleep(0.1)


async def make(window, app) -> None:
    from app.engine.core.paths import examples_dir

    examples = examples_dir()
    await window.client.wait_models()
    records = await window.open_paths([str(examples / name) for name in
                                       ("SrTiO3.cif", "NaCl.cif", "CsCl.cif", "GaAs.cif", "TiO2_rutile.cif")])
    window.library.select([records[0]])
    await window.viewer.wait_density()
    window.viewer.show_density.setChecked(False)
    window.viewer.show_polyhedra.setChecked(True)
    await asyncio.sleep(0.5)
    app.processEvents()
    window.grab().save(str(HERE / "main-window.png"))
    window.library.select([records[1]])
    await window.viewer.wait_density()
    window.viewer.show_polyhedra.setChecked(False)
    window.viewer.show_density.setChecked(True)
    await window.viewer.wait_density()
    window.viewer.show_slices.setChecked(True)
    await asyncio.sleep(0.3)
    window.viewer.export_image(str(HERE / "density-isosurface.png"), (1200, 900))
    window.library.select(records[:3])
    plot = window.plots.show_xrd(wavelength=1.54184)
    await _wait_for(lambda: plot.task.done())
    plot.export_figure(HERE / "powder-xrd.png")
    plot.close()


def main() -> int:
    import qasync
    from PySide6.QtWidgets import QApplication

    from app.settings import AppSettings
    from app.ui.main_window import MainWindow

    app = QApplication([])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory() as folder:
        window = MainWindow(AppSettings(), settings_path=Path(folder) / "settings.json",
                            session_path=Path(folder) / "session.json")
        window.resize(1500, 950)
        window.show()
        window.start()
        try:
            loop.run_until_complete(asyncio.wait_for(make(window, app), 600))
        finally:
            window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
