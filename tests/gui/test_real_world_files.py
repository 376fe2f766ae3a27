"""Real-world files in the window: frames as entries, broken files in red, disordered entries with
their ordered approximant and a choice of ordering."""

from __future__ import annotations

from pathlib import Path

from gui_support import drop_files, requires_display, wait_until

pytestmark = requires_display

PILE = Path(__file__).parents[1] / "data" / "real_world"


def _ready(window, count):
    entries = window.library.entries()
    return len(entries) == count and all(r.status in ("ready", "failed") for r in entries)


def test_disordered_entry_shows_its_approximant_and_another_ordering_can_be_picked(window, run):
    drop_files(window, [PILE / "vacancies.cif", PILE / "Al_md.axsf", PILE / "broken" / "truncated.axsf"])
    run(wait_until(lambda: _ready(window, 4), message="4 library entries"))
    records = {r.name: r for r in window.library.entries()}
    assert {"Al_md.axsf#1", "Al_md.axsf#2"} <= set(records)
    assert records["truncated.axsf"].error and "truncated" in records["truncated.axsf"].error

    disordered = records["vacancies.cif"]
    assert disordered.prediction_error is None and disordered.ordering is not None
    choices = disordered.ordering["choices"]
    assert len(choices) > 1 and disordered.structure is choices[0]["structure"]
    assert disordered.structure.is_ordered and disordered.structure.composition["Fe"] == 3

    window.library.select([disordered])
    panel = window.library
    assert panel.ordering_box.isVisible() and panel.ordering_box.count() == len(choices)
    assert "ordered approximant" in panel.details.text() and "Showing ordering 1" in panel.details.text()

    shown = []
    panel.selection_changed.connect(lambda records: shown.append(records))
    panel.ordering_box.setCurrentIndex(1)
    panel.ordering_box.activated.emit(1)
    assert disordered.ordering["chosen"] == 1 and disordered.structure is choices[1]["structure"]
    assert disordered.properties == choices[1]["properties"]
    assert shown and shown[-1] == [disordered]  # the viewer is told to show the new ordering
    assert "Showing ordering 2" in panel.details.text()

    window.library.select([records["Al_md.axsf#1"]])
    assert not panel.ordering_box.isVisible()
