"""Redraw time of the 3-D viewer for a 100-atom cell, and how long the window takes to open.

Run under a display (``xvfb-run -a .venv/bin/python benchmarks/viewer_redraw.py``). Prints the
machine's load average, then the time from importing the window's modules to its first painted
frame (the worker starts in the background and is not waited for; the 3-D view is made just
after, and the time until it has rendered once is printed too), then the median of
``--repeats`` redraws of a 100-site cell:

- a new style (atom size changed: every mesh is rebuilt), split into meshes and rendering;
- a redraw that keeps the crystal's actors (what toggling the density, slices or level does),
  with and without the isosurface and its colour bar;
- the periodic map of a non-cubic crystal (rutile, 24³ on its tetragonal cell's fractional grid):
  a redraw that rebuilds its grid and isosurface.

Software OpenGL (llvmpipe, as under Xvfb) renders slower than a GPU.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path


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
    scales = iter(itertools.cycle((1.0, 1.05)))

    def restyle():  # a new atom size: every mesh of the crystal is rebuilt
        viewer.atom_scale.blockSignals(True)
        viewer.atom_scale.setValue(next(scales))
        viewer.atom_scale.blockSignals(False)
        viewer._redraw()

    render = viewer.plotter.render
    viewer.plotter.render = lambda: None
    build = _median_ms(restyle, repeats)
    viewer.plotter.render = render
    total = _median_ms(restyle, repeats)
    print(f"redraw, new style (all meshes rebuilt): {total:.1f} ms median of {repeats} (meshes {build:.1f} ms, "
          f"render {total - build:.1f} ms)")
    kept = _median_ms(viewer._redraw, repeats)
    print(f"redraw, crystal actors kept (density toggled off): {kept:.1f} ms median of {repeats}")
    viewer._density = scene.DensityView(density, tuple(structure.lattice.abc), structure)
    viewer.show_density.setChecked(True)
    total = _median_ms(viewer._redraw, repeats)
    print(f"redraw, with isosurface and colour bar (crystal actors kept): {total:.1f} ms median of {repeats}")
    measure_periodic_redraw(viewer, repeats)
    viewer.close_plotter()


def measure_periodic_redraw(viewer, repeats: int) -> None:
    """Rutile's periodic map in its own cell: each redraw rebuilds the StructuredGrid and the isosurface."""
    from pymatgen.core import Lattice, Structure

    from app.engine.generation.periodic_density import encode
    from app.ui import scene
    from app.ui.records import library_record

    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                       [[0, 0, 0], [0.3053, 0.3053, 0]])
    maps = encode(rutile)
    record = library_record({"source": "bench", "path": "bench", "name": "TiO2 rutile", "structure": rutile,
                             "warnings": [], "error": None, "formula": "TiO2", "space_group": "P4_2/mnm",
                             "n_sites": len(rutile)})
    view = scene.DensityView(maps.density, tuple(maps.structure.lattice.abc), maps.structure,
                             maps.structure.lattice.matrix)
    viewer.show_density.setChecked(False)
    viewer.show_record(record)
    viewer._set_density(view)
    viewer.show_density.setChecked(True)

    def redraw():
        viewer._density_grid = None  # a new map: the grid is rebuilt too
        viewer._redraw()

    total = _median_ms(redraw, repeats)
    print(f"redraw, periodic map of rutile ({maps.density.shape[0]}³ in its tetragonal cell, grid and "
          f"isosurface rebuilt, crystal actors kept): {total:.1f} ms median of {repeats}")


def measure_startup() -> None:
    from PySide6.QtWidgets import QApplication

    started = time.perf_counter()
    from app.settings import AppSettings
    from app.ui.main_window import MainWindow

    imported = time.perf_counter()
    # A temporary settings/session folder: the benchmark neither restores nor overwrites the user's session.
    scratch = Path(tempfile.mkdtemp(prefix="crystal-designer-startup-"))
    window = MainWindow(AppSettings(), settings_path=scratch / "settings.json", session_path=scratch / "session.json")
    window.show()
    QApplication.processEvents()
    shown = time.perf_counter()
    print(f"window: imports {imported - started:.2f} s, built and first frame {shown - imported:.2f} s, "
          f"total {shown - started:.2f} s (worker not started)")
    window.viewer.plotter.render()
    QApplication.processEvents()
    print(f"3-D view made and rendered {time.perf_counter() - shown:.2f} s after that (pyvista and VTK load then)")
    window.viewer.close_plotter()
    window.client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
          + f" on {os.cpu_count()} cores")
    measure_startup()
    measure_redraw(args.repeats)
    app.quit()


if __name__ == "__main__":
    main()
