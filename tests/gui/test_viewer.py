"""The 3-D viewer: atoms, bonds, cell, supercell, density isosurface and slices, notes."""

from __future__ import annotations

import numpy as np
from gui_support import kept_candidate_payload, requires_display, wait_until

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


def test_non_cubic_structure_shows_atoms_and_a_note(window, run, example):
    from app.ui.viewer_panel import NON_CUBIC_NOTE

    records = run(window.open_paths([example("TiO2_rutile")]))
    viewer = window.viewer
    run(wait_until(lambda: viewer.note.text() == NON_CUBIC_NOTE, timeout=60, message="non-cubic note"))
    assert viewer.density_view is None
    assert "atoms" in _actors(window) and "isosurface" not in _actors(window)
    assert viewer.record is records[0]


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
