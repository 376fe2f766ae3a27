"""Redraw time of the 3-D viewer for a 100-atom cell, and how long the window takes to open.

Run under a display (``xvfb-run -a .venv/bin/python benchmarks/viewer_redraw.py``). Prints the
median of ``--repeats`` redraws (meshes built and one frame rendered), split into mesh
building and rendering, with and without the density map's isosurface, then the time from
constructing the main window to its first painted frame (the worker starts in the background
and is not waited for). Software OpenGL (llvmpipe, as under Xvfb) renders slower than a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _hundred_atom_record():
    from pymatgen.core import Lattice, Structure

    from app.ui.records import library_record

    perovskite = Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"],
                                           [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])
    _hundred_atom_record.perovskite = perovskite
    cell = perovskite * (5, 2, 2)  # 100 sites
    return library_record({"source": "bench", "path": "bench", "name": "SrTiO3 5x2x2", "structure": cell,
                           "warnings": [], "error": None, "formula": "SrTiO3", "space_group": "P4/mmm",
                           "n_sites": len(cell)})


def _median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure_redraw(repeats: int) -> None:
    from app.ui import scene
    from app.ui.viewer_panel import ViewerPanel

    record = _hundred_atom_record()
    structure = record.get_structure()
    from app.engine.generation.density import encode

    density = encode(_hundred_atom_record.perovskite).density  # a real map: one SrTiO3 cell

    async def provider(_record):
        return scene.DensityView(density, tuple(structure.lattice.abc), structure)

    viewer = ViewerPanel(provider)
    viewer.resize(1000, 750)
    viewer.show_density.setChecked(False)
    viewer.show()
    viewer.show_record(record)
    print(f"cell: {len(structure)} sites, {len(viewer.displayed_atoms.symbols)} atoms drawn (with face images)")
    render = viewer.plotter.render
    viewer.plotter.render = lambda: None
    build = _median_ms(viewer._redraw, repeats)
    viewer.plotter.render = render
    total = _median_ms(viewer._redraw, repeats)
    print(f"redraw, structure only: {total:.1f} ms median of {repeats} (meshes {build:.1f} ms, "
          f"render {total - build:.1f} ms)")
    viewer._density = scene.DensityView(density, tuple(structure.lattice.abc), structure)
    viewer.show_density.setChecked(True)
    total = _median_ms(viewer._redraw, repeats)
    print(f"redraw, with isosurface and colour bar: {total:.1f} ms median of {repeats}")
    viewer.close_plotter()


def measure_startup() -> None:
    from PySide6.QtWidgets import QApplication

    started = time.perf_counter()
    from app.settings import AppSettings
    from app.ui.main_window import MainWindow

    imported = time.perf_counter()
    window = MainWindow(AppSettings())
    window.show()
    window.viewer.plotter.render()
    QApplication.processEvents()
    shown = time.perf_counter()
    print(f"window: imports {imported - started:.2f} s, built and first frame {shown - imported:.2f} s, "
          f"total {shown - started:.2f} s (worker not started)")
    window.viewer.close_plotter()
    window.client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    measure_startup()
    measure_redraw(args.repeats)
    app.quit()


if __name__ == "__main__":
    main()
