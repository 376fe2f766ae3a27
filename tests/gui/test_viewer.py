"""The 3-D viewer: atoms, bonds, cell, supercell, density isosurface and slices, notes."""

from __future__ import annotations

import numpy as np
from gui_support import kept_candidate_payload, periodic_candidate_payload, requires_display, wait_until

pytestmark = requires_display


def _actors(window):
    return set(window.viewer.plotter.renderer.actors)


def test_cubic_library_entry_shows_atoms_bonds_cell_and_density(window, run, example):
    from app.ui.scene import display_atoms

    records = run(window.open_paths([example("NaCl")]))
    viewer = window.viewer
    assert viewer.record is records[0]  # the first opened entry is selected and shown
    run(viewer.wait_density())
    assert viewer.density_view is not None and viewer.density_view.density.shape == (32, 32, 32)
    assert {"atoms", "bonds", "cell", "isosurface"} <= _actors(window)
    assert viewer.note.text() == ""

    level_before = viewer.level_label.text()
    viewer.level.setValue(90)
    assert viewer.level_label.text() != level_before and "isosurface" in _actors(window)
    viewer.show_slices.setChecked(True)
    assert "slices" in _actors(window)
    viewer.supercell[0].setValue(2)
    atoms = display_atoms(viewer.density_view.structure, (2, 1, 1))
    assert len(atoms.symbols) == 45  # 8 sites × 2 cells + face copies: 3×5×3 grid of a rock-salt net
    image = viewer.plotter.screenshot(return_img=True)
    assert image.std() > 5  # something was drawn, not a blank canvas


def test_rutile_shows_its_periodic_map_in_the_tetragonal_cell(window, run, example):
    """Non-cubic crystals get the periodic map, drawn in their own cell; toggling it changes pixels."""
    records = run(window.open_paths([example("TiO2_rutile")]))
    viewer = window.viewer
    assert viewer.record is records[0]
    run(viewer.wait_density())
    view = viewer.density_view
    assert view is not None and view.periodic and view.density.shape == (24, 24, 24)
    assert viewer.note.text() == ""
    assert {"atoms", "cell", "isosurface"} <= _actors(window)
    assert "a.u." in viewer.level_label.text() and any("a.u." in title for title in viewer.plotter.scalar_bars.keys())
    # The surface lies in the map's (standard, primitive) cell, and the atoms drawn are that cell's.
    surface = viewer.plotter.renderer.actors["isosurface"].mapper.dataset
    frac = np.asarray(surface.points) @ np.linalg.inv(view.lattice_matrix)
    assert frac.min() > -1e-6 and frac.max() < 1 + 1e-6
    assert viewer.displayed_atoms is not None and view.structure.composition.reduced_formula == "TiO2"
    _assert_hiding_the_isosurface_changes_pixels(window)
    viewer.show_density.setChecked(True)
    viewer.show_slices.setChecked(True)
    assert "slices" in _actors(window)
    slices = viewer.plotter.renderer.actors["slices"].mapper.dataset
    assert slices is not None


def test_crystal_without_a_map_shows_atoms_and_says_why(window, run, tmp_path):
    from pymatgen.core import Lattice, Structure

    from app.ui.viewer_panel import NO_MAP_NOTE

    rng = np.random.default_rng(0)
    big = Structure(Lattice.orthorhombic(9, 10, 11), ["Na"] * 12 + ["Cl"] * 12, rng.uniform(0, 1, (24, 3)))
    path = tmp_path / "big.cif"
    big.to(filename=str(path))
    records = run(window.open_paths([path]))
    viewer = window.viewer
    run(wait_until(lambda: viewer.note.text() == NO_MAP_NOTE, timeout=60, message="no-map note"))
    assert "20" in viewer.note.toolTip()  # the engine's reason names the site limit
    assert viewer.density_view is None
    assert "atoms" in _actors(window) and "isosurface" not in _actors(window)
    assert viewer.record is records[0]


def test_periodic_candidate_shows_its_decoded_map_beside_its_structure(window, run, example):
    from pymatgen.core import Structure

    from app.ui.records import candidate_record

    rutile = Structure.from_file(str(example("TiO2_rutile")))
    candidate = candidate_record(periodic_candidate_payload(rutile, index=3), "TiO2_rutile.cif")
    window.model.add([candidate])
    window.results.select([candidate])
    window.results.view.setCurrentIndex(window.results.view.selectionModel().selectedRows()[0])
    viewer = window.viewer
    assert viewer.record is candidate
    view = viewer.density_view
    assert view is not None and view.periodic and view.density.shape == (24, 24, 24)
    assert {"atoms", "isosurface", "map_cell"} <= _actors(window)
    atoms_y = np.asarray(viewer.plotter.renderer.actors["atoms"].mapper.dataset.points)[:, 1]
    surface_y = np.asarray(viewer.plotter.renderer.actors["isosurface"].mapper.dataset.points)[:, 1]
    assert surface_y.min() > atoms_y.max()  # beside, not on top
    viewer.side_by_side.setChecked(False)
    frac = np.asarray(viewer.plotter.renderer.actors["isosurface"].mapper.dataset.points) @ np.linalg.inv(
        view.lattice_matrix)
    assert frac.min() > -1e-6 and frac.max() < 1 + 1e-6  # on the structure, in its cell


def test_default_level_is_keyed_on_periodic_and_decoded():
    from app.ui.scene import DensityView
    from app.ui.viewer_panel import DEFAULT_LEVEL, DEFAULT_LEVEL_DECODED, DEFAULT_LEVEL_PERIODIC, default_level

    density, matrix = np.zeros((24, 24, 24), dtype=np.float32), np.eye(3) * 4.0
    computed = DensityView(density, (4.0, 4.0, 4.0), None, matrix)
    decoded = DensityView(density, (4.0, 4.0, 4.0), None, matrix, decoded=True)
    cubic, cubic_decoded = (DensityView(np.zeros((32, 32, 32)), (4.0, 4.0, 4.0), None, decoded=flag)
                            for flag in (False, True))
    assert default_level(computed) == DEFAULT_LEVEL_PERIODIC and default_level(decoded) == DEFAULT_LEVEL_DECODED
    assert default_level(cubic) == default_level(cubic_decoded) == DEFAULT_LEVEL
    # The level resets when the default changes: the three kinds need three different defaults.
    assert len({DEFAULT_LEVEL, DEFAULT_LEVEL_PERIODIC, DEFAULT_LEVEL_DECODED}) == 3


def test_level_resets_to_the_decoded_default_on_a_decoded_map_and_back(window, run, example):
    """A structure's own periodic map starts at the computed default, a candidate's decoded map at
    the decoded one; switching between them resets the level, another map of the same kind keeps it."""
    from pymatgen.core import Structure

    from app.ui.records import candidate_record
    from app.ui.viewer_panel import DEFAULT_LEVEL_DECODED, DEFAULT_LEVEL_PERIODIC

    def select(record):
        window.results.select([record])
        window.results.view.setCurrentIndex(window.results.view.selectionModel().selectedRows()[0])
        assert viewer.record is record

    records = run(window.open_paths([example("TiO2_rutile")]))
    viewer = window.viewer
    run(viewer.wait_density())
    assert viewer.density_view.periodic and not viewer.density_view.decoded
    assert viewer.level.value() == round(DEFAULT_LEVEL_PERIODIC * 100)

    rutile = Structure.from_file(str(example("TiO2_rutile")))
    candidates = [candidate_record(periodic_candidate_payload(rutile, index=i), "TiO2_rutile.cif") for i in (1, 2)]
    window.model.add(candidates)
    select(candidates[0])
    assert viewer.density_view.periodic and viewer.density_view.decoded
    assert viewer.level.value() == round(DEFAULT_LEVEL_DECODED * 100)
    viewer.level.setValue(50)
    select(candidates[1])  # same kind: the user's level stays
    assert viewer.level.value() == 50

    select(records[0])
    run(viewer.wait_density())
    assert not viewer.density_view.decoded
    assert viewer.level.value() == round(DEFAULT_LEVEL_PERIODIC * 100)


def test_candidate_shows_its_decoded_density_with_the_atoms(window, run, example):
    from app.ui.records import candidate_record

    records = run(window.open_paths([example("CsCl")]))
    candidate = candidate_record(kept_candidate_payload(records[0].structure, index=7), "CsCl.cif")
    window.model.add([candidate])
    window.results.select([candidate])
    window.results.view.setCurrentIndex(window.results.view.selectionModel().selectedRows()[0])
    viewer = window.viewer
    assert viewer.record is candidate
    assert viewer.density_view is not None  # no worker round trip: the candidate carries its map
    assert np.allclose(viewer.density_view.density, candidate.density.astype(np.float32))
    assert {"atoms", "isosurface"} <= _actors(window)
    assert "CsCl_gen00007" in viewer.title.text()


def _assert_hiding_the_isosurface_changes_pixels(window):
    """Untick Density and check that the isosurface is gone and > 2 % of the pixels changed."""
    viewer = window.viewer
    with_map = viewer.plotter.screenshot(return_img=True).astype(int)
    viewer.show_density.setChecked(False)
    without_map = viewer.plotter.screenshot(return_img=True).astype(int)
    assert "isosurface" not in _actors(window)
    changed = np.any(np.abs(with_map - without_map) > 10, axis=2).mean()
    assert changed > 0.02, f"only {changed:.1%} of the pixels changed when the isosurface was hidden"


def _display_position(viewer, point):
    """VTK display coordinates (pixels, origin bottom left) of a world point."""
    renderer = viewer.plotter.renderer
    renderer.SetWorldPoint(*point, 1.0)
    renderer.WorldToDisplay()
    x, y, _ = renderer.GetDisplayPoint()
    return round(x), round(y)


def test_legend_lists_the_elements_and_isosurface_changes_pixels(window, run, example):
    run(window.open_paths([example("SrTiO3")]))
    viewer = window.viewer
    run(viewer.wait_density())
    assert viewer.legend_symbols == ["O", "Ti", "Sr"]  # by atomic number
    assert all(symbol in viewer.legend.text() for symbol in ("O", "Ti", "Sr"))
    assert "isosurface" in _actors(window) and viewer.plotter.scalar_bars  # visible by default, with a colour bar
    _assert_hiding_the_isosurface_changes_pixels(window)


def test_clicking_two_neighbouring_atoms_of_rock_salt_reports_their_distance(window, run, example):
    run(window.open_paths([example("NaCl")]))
    viewer = window.viewer
    viewer.show_density.setChecked(False)
    viewer.view_along("c")
    viewer.orthographic.setChecked(True)
    atoms = viewer.displayed_atoms
    # The Na at the origin and the Cl half a cell along a; seen down c, neither hides behind another atom
    # when they lie on the top face (largest z).
    top = atoms.positions[:, 2].max()
    sodium = next(i for i, (s, p) in enumerate(zip(atoms.symbols, atoms.positions))
                  if s == "Na" and np.allclose(p, [0, 0, top], atol=1e-3))
    chlorine = next(i for i, (s, p) in enumerate(zip(atoms.symbols, atoms.positions))
                    if s == "Cl" and np.allclose(p, [atoms.positions[:, 0].max() / 2, 0, top], atol=1e-3))
    assert viewer.pick_at(*_display_position(viewer, atoms.positions[sodium])) == sodium
    assert "Na" in viewer.pick_label.text() and "frac (0.0000, 0.0000," in viewer.pick_label.text()
    assert viewer.pick_at(*_display_position(viewer, atoms.positions[chlorine])) == chlorine
    assert "2.82 Å" in viewer.pick_label.text()
    assert "2.82 Å" in window.status.currentMessage()
    angle = viewer.pick_atom(next(i for i, s in enumerate(atoms.symbols) if s == "Na"
                                  and np.allclose(atoms.positions[i], [atoms.positions[:, 0].max(), 0, top])))
    assert "180.0°" in angle  # Na – Cl – Na along a


def test_polyhedra_views_projection_and_image_export(window, run, example, tmp_path):
    from PIL import Image

    run(window.open_paths([example("SrTiO3")]))
    viewer = window.viewer
    viewer.show_polyhedra.setChecked(True)
    assert "polyhedra" in _actors(window)  # TiO6 octahedra
    for axis in ("a", "b", "c", "reset"):
        viewer.view_along(axis)
    viewer.view_along("a")
    direction = np.array(viewer.plotter.camera.position) - np.array(viewer.plotter.camera.focal_point)
    # Along the drawn cell's own a: the file's cell, or the density map's standard cell once the
    # map has arrived (for SrTiO3 that one has a = (-3.905, 0, 0)), whichever is shown now.
    a = viewer._drawn_structure.lattice.matrix[0]
    assert np.linalg.norm(np.cross(direction, a)) < 1e-6 * np.linalg.norm(direction) * np.linalg.norm(a)
    assert np.dot(direction, a) > 0
    viewer.orthographic.setChecked(True)
    assert viewer.plotter.camera.GetParallelProjection()
    path = tmp_path / "view.png"
    viewer.export_image(str(path), (800, 600))
    assert Image.open(path).size == (800, 600)


def test_atom_size_follows_the_radius_choice(window, run, example):
    run(window.open_paths([example("NaCl")]))
    viewer = window.viewer
    viewer.show_density.setChecked(False)
    atomic = viewer.plotter.renderer.actors["atoms"].mapper.dataset.bounds
    viewer.radius_kind.setCurrentIndex(1)  # ionic: Na+ 1.16 Å, smaller than its atomic 1.80 Å
    ionic = viewer.plotter.renderer.actors["atoms"].mapper.dataset.bounds
    assert ionic[1] - ionic[0] < atomic[1] - atomic[0]
    viewer.atom_scale.setValue(0.5)
    half = viewer.plotter.renderer.actors["atoms"].mapper.dataset.bounds
    assert half[1] - half[0] < ionic[1] - ionic[0]
