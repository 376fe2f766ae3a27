"""Stability in the window: E_hull of library files, the loaded-models count, the relaxed/unrelaxed
toggle, the S.U.N. count and a density colour bar that fits the view."""

from __future__ import annotations

import numpy as np
from gui_support import kept_candidate_payload, requires_display, wait_until
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from app.ui.records import candidate_record
from app.ui.results_model import COLUMN_INDEX

pytestmark = requires_display


def write_tiny_hull(folder) -> None:
    """A reference hull of Na, Cl and NaCl (-2 eV/atom) in the tiny models folder."""
    from app.engine.stability.hull import HULL_FILE, ReferenceHull

    hull = ReferenceHull(["Na", "Cl"], [[1, 0], [0, 1], [0.5, 0.5]], [0.0, 0.0, -2.0], ["Na", "Cl", "NaCl"],
                         ["ref-Na", "ref-Cl", "ref-NaCl"])
    hull.save(folder / HULL_FILE)


def cell(window, row: int, key: str, role=None):
    from PySide6.QtCore import Qt

    model = window.results.filter
    return model.data(model.index(row, COLUMN_INDEX[key]), role or Qt.ItemDataRole.DisplayRole)


def test_library_files_get_e_above_hull_and_decomposition_from_the_worker(tiny_models, window, run, example):
    write_tiny_hull(tiny_models)
    [record] = run(window.open_paths([example("NaCl")]))
    predicted = record.property("formation_energy_per_atom")
    assert predicted is not None
    # NaCl is a hull phase at -2 eV/atom: E_hull is the predicted energy minus the hull's.
    assert abs(record.e_above_hull - (predicted + 2.0)) < 1e-6
    assert record.stability["decomposition"] == "NaCl"
    assert cell(window, 0, "e_above_hull") == f"{predicted + 2.0:.3f}"
    assert cell(window, 0, "decomposition") == "NaCl"
    # The models label counts what the worker has loaded, the hull included, of every shipped entry.
    text = window.status.models_label.text()
    assert " of " in text and "loaded" in text
    assert "reference_hull" in window.status.models_label.toolTip()


def test_without_a_hull_the_reason_is_in_the_tooltip(window, run, example):
    from PySide6.QtCore import Qt

    [record] = run(window.open_paths([example("NaCl")]))
    assert record.e_above_hull is None and record.stability["hull_error"]
    assert cell(window, 0, "e_above_hull") == "—"
    assert "No E_hull" in cell(window, 0, "e_above_hull", Qt.ItemDataRole.ToolTipRole)


def test_models_label_counts_loaded_of_shipped_models(window):
    from app.engine.core.registry import load_manifest

    shipped = len(load_manifest())
    loaded = len(window.client.model_info["versions"])
    assert window.status.models_label.text().startswith(f"Models: {loaded} of {shipped} loaded")


def _relaxed_candidate():
    decoded = Structure(Lattice.cubic(4.0), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    relaxed = Structure(Lattice.cubic(4.2), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return candidate_record({
        "index": 0, "formula": "CsCl", "properties": {}, "flags": {"decoded": True}, "latent_distance": 1.0,
        "kept": True, "error": None, "n_sites": 2, "structure": decoded, "cif": str(CifWriter(decoded)),
        "density": None, "space_group": "Pm-3m (221)", "relaxed_structure": relaxed,
        "relaxed_cif": str(CifWriter(relaxed)),
        "stability": {"e_above_hull": 0.01, "relaxed_space_group": "Pm-3m (221)", "relaxation_state": "relaxed"},
    }, "CsCl.cif")


def test_viewer_toggles_between_the_relaxed_and_the_unrelaxed_cell(window, run, example):
    viewer = window.viewer
    candidate = _relaxed_candidate()
    window.model.add([candidate])
    viewer.show_density.setChecked(False)
    viewer.show_record(candidate)
    assert viewer.show_unrelaxed.isEnabled() and not viewer.show_unrelaxed.isChecked()
    assert viewer._drawn_structure.lattice.a == 4.2 and "(relaxed)" in viewer.title.text()
    viewer.show_unrelaxed.setChecked(True)
    assert viewer._drawn_structure.lattice.a == 4.0 and "(unrelaxed)" in viewer.title.text()
    assert candidate.show_unrelaxed  # the choice stays with the candidate
    [library] = run(window.open_paths([example("NaCl")]))
    viewer.show_record(library)
    assert not viewer.show_unrelaxed.isEnabled()
    viewer.show_record(candidate)
    assert viewer.show_unrelaxed.isChecked()
    viewer.show_unrelaxed.setChecked(False)
    assert viewer._drawn_structure.lattice.a == 4.2


def test_funnel_ends_with_the_sun_count(window):
    from app.ui.generate_panel import SUN_LABEL

    panel = window.generate_panel
    panel.show_funnel({"generated": 200, "unique": 30, "sun": 7})
    rows = {panel.funnel.topLevelItem(i).text(0): panel.funnel.topLevelItem(i).text(1)
            for i in range(panel.funnel.topLevelItemCount())}
    assert rows[SUN_LABEL] == "7"


def test_density_colour_bar_fits_a_narrow_view(window, run, example):
    """Nothing is drawn in the last columns of a narrow view: the colour bar's title is not clipped there."""
    window.resize(900, 700)
    run(window.open_paths([example("NaCl")]))
    viewer = window.viewer
    run(viewer.wait_density())
    run(wait_until(lambda: viewer.plotter.scalar_bars, timeout=30, message="colour bar"))
    image = viewer.plotter.screenshot(return_img=True).astype(int)
    assert image.shape[1] < 700
    edge = image[:, -4:, :3]
    assert np.all(edge > 235), "something touches the right edge of the view (a clipped colour bar?)"
    bar = image[:, int(image.shape[1] * 0.8):, :3]
    assert (bar < 100).any(), "the colour bar is not drawn"


def test_session_keeps_library_e_hull_and_candidate_latents():
    import json

    from app.ui.records import (candidate_from_session, library_from_session, library_record, to_session)

    library = library_record({"source": "/x/NaCl.cif", "name": "NaCl.cif", "formula": "NaCl"})
    library.properties = {"formation_energy_per_atom": -2.1}
    library.stability = {"e_above_hull": -0.1, "decomposition": "NaCl", "hull_error": None}
    restored = library_from_session(json.loads(json.dumps(to_session(library))))
    assert restored.e_above_hull == -0.1 and restored.stability["decomposition"] == "NaCl"

    candidate = _relaxed_candidate()
    candidate.latent = np.linspace(-1, 1, 8, dtype=np.float32)
    again = candidate_from_session(json.loads(json.dumps(to_session(candidate))))
    assert np.allclose(again.latent, candidate.latent, atol=1e-5)


def test_generate_panel_sets_relaxation_and_the_hull_threshold(window):
    panel = window.generate_panel
    settings = panel.generation_settings()
    assert settings.relax and not settings.relax_all and settings.require_near_hull
    assert settings.max_e_above_hull == 0.1
    panel.max_e_above_hull.setValue(0.05)
    panel.relax_all.setChecked(True)
    panel.near_hull.setChecked(False)
    assert not panel.max_e_above_hull.isEnabled()
    settings = panel.generation_settings()
    assert settings.relax_all and not settings.require_near_hull and settings.max_e_above_hull == 0.05
    panel.relax.setChecked(False)
    settings = panel.generation_settings()
    assert not settings.relax and not settings.relax_all and not panel.relax_all.isEnabled()


def test_removing_rows_keeps_the_library_selection(window, run, example):
    """A new generation drops the last run's rejected rows (a model reset): the base stays selected."""
    records = run(window.open_paths([example("NaCl"), example("CsCl")]))
    window.library.select([records[1]])
    rejected = candidate_record(kept_candidate_payload(records[0].structure, index=1), "CsCl.cif")
    window.model.add([rejected])
    window.model.remove([rejected])
    assert window.library.selected_records() == [records[1]]
    assert window.generate_panel.base is records[1]
