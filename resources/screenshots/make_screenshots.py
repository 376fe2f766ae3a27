"""Regenerate the README screenshots: the window, density maps, a powder pattern, the latent map, a parity plot.

Run under a display from the repository root::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python resources/screenshots/make_screenshots.py

Uses the shipped models through the worker process and a temporary settings/session folder,
so the user's own settings are untouched. It opens the bundled examples, generates
``--samples`` candidates around SrTiO3 (periodic generator) and around NaCl (cubic generator),
relaxed with CHGNet, then saves:

- ``main-window.png``: the window with NaCl's density isosurface and the Results table
  (E_hull and decomposition of the library rows and kept candidates, the funnel and S.U.N. count);
- ``density-isosurface.png``: File → Export image of NaCl's isosurface and slices;
- ``density-periodic.png``: rutile (tetragonal) with the periodic map of its cell, isosurface and
  the three lattice mid-plane slices;
- ``candidate-map.png``: the first kept candidate around SrTiO3 (periodic generator) beside its
  decoded map (when one is kept);
- ``powder-xrd.png``: simulated patterns of three examples;
- ``latent-map.png``: the cubic generator's latent map with NaCl and its candidates;
- ``model-parity.png``: Plots → Models, the formation-energy model's validation parity plot.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))


async def _wait_for(predicate, timeout: float = 600.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("timed out waiting for the window")
        await asyncio.sleep(0.1)


async def make(window, app, samples: int) -> None:
    from app.engine.core.paths import examples_dir

    examples = examples_dir()
    await window.client.wait_models()
    records = await window.open_paths([str(examples / name) for name in
                                       ("SrTiO3.cif", "NaCl.cif", "CsCl.cif", "GaAs.cif", "TiO2_rutile.cif")])
    # SrTiO3 goes to the periodic generator, NaCl to the cubic one, whose latent space the map shows.
    for base in (records[0], records[1]):
        window.library.select([base])
        if samples:
            panel = window.generate_panel
            panel.count.setValue(samples)
            await _wait_for(panel.generate_button.isEnabled)
            task = window.start_generation()
            await asyncio.wait([task])
    window.results.kept_only.setChecked(True)  # library rows (with E_hull) and the kept candidates
    latent = window.plots.show_latent_map()  # NaCl (selected) as the base, with the candidates
    await _wait_for(lambda: latent.task.done())
    print("latent map bases:", [r.name for r in window.library.selected_records()], "note:", latent.message.text())
    latent.export_figure(HERE / "latent-map.png")
    latent.close()

    window.library.select([records[1]])  # NaCl: its isosurface encloses the atoms at the default level
    window.viewer.show_density.setChecked(True)
    await window.viewer.wait_density()
    await asyncio.sleep(0.5)
    app.processEvents()
    window.grab().save(str(HERE / "main-window.png"))

    window.viewer.show_slices.setChecked(True)
    await asyncio.sleep(0.3)
    window.viewer.export_image(str(HERE / "density-isosurface.png"), (1200, 900))
    window.viewer.show_slices.setChecked(False)

    window.library.select([records[4]])  # rutile: the periodic map in its tetragonal cell
    await asyncio.sleep(0.3)
    await window.viewer.wait_density()
    window.viewer.show_slices.setChecked(True)
    await asyncio.sleep(0.3)
    window.viewer.export_image(str(HERE / "density-periodic.png"), (1200, 900))
    window.viewer.show_slices.setChecked(False)

    window.library.select(records[:3])
    plot = window.plots.show_xrd(wavelength=1.54184)
    await _wait_for(lambda: plot.task.done())
    plot.export_figure(HERE / "powder-xrd.png")
    plot.close()

    # The first kept candidate of the periodic generator (around SrTiO3) beside its decoded map.
    kept = [r for r in window.model.records if r.is_candidate and r.kept and r.density is not None
            and r.density.shape[0] == 24]
    if kept:
        window.results.select([kept[0]])
        window.results.view.setCurrentIndex(window.results.view.selectionModel().selectedRows()[0])
        await asyncio.sleep(0.5)
        window.viewer.export_image(str(HERE / "candidate-map.png"), (1400, 800))

    models = window.plots.show_models()
    names = [name for name, _ in models.rows]
    models.list.setCurrentRow(names.index("formation_energy"))
    models.parity.figure.set_size_inches(6.0, 5.0)
    models.parity.export_figure(HERE / "model-parity.png")
    models.close()


def main() -> int:
    import qasync
    from PySide6.QtWidgets import QApplication

    from app.settings import AppSettings
    from app.ui.main_window import MainWindow

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=48, help="candidates generated around SrTiO3 and around NaCl (0: none)")
    args = parser.parse_args()
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
            with loop:  # closing the loop also stops its executor threads (XRD runs in one)
                loop.run_until_complete(asyncio.wait_for(make(window, app, args.samples), 1500))
        finally:
            window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
