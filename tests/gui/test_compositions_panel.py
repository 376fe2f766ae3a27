"""The Compositions panel as a user plays it: targets → generate → table → make structures → Results."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the DING test models live beside the unit tests

from test_compositions_support import write_tiny_ding_models  # noqa: E402


def test_generate_compositions_and_make_structures(tiny_models, make_window, run, qtbot):
    from PySide6.QtCore import Qt

    write_tiny_ding_models(tiny_models, decoded={"K": 1, "Cl": 1})
    window = make_window()
    run(window.client.wait_models(), timeout=120)
    panel = window.compositions
    window.docks["compositions"].raise_()
    panel.values["formation_enthalpy"].setValue(-2.0)
    panel.samples.setValue(30)

    with qtbot.waitSignal(panel.generated, timeout=60_000) as generated:
        qtbot.mouseClick(panel.generate_button, Qt.MouseButton.LeftButton)
    counts = generated.args[0]["counts"]
    assert counts["samples"] == 30 and counts["unique"] == 1 and counts["not_in_training"] == 1
    assert panel.table.rowCount() == 1 and panel.table.item(0, 0).text() == "KCl"
    assert "30 samples" in panel.status.text()

    panel.table.selectRow(0)
    assert panel.structures_button.isEnabled()
    library_before = window.model.count("library")
    with qtbot.waitSignal(panel.structures_made, timeout=60_000) as made:
        qtbot.mouseClick(panel.structures_button, Qt.MouseButton.LeftButton)
    records = made.args[0]
    assert len(records) == 1 and records[0].formula == "KCl" and records[0].structure is not None
    assert records[0].properties.get("formation_energy_per_atom") is not None
    assert window.model.count("library") == library_before + 1
    assert window.model.row_of(records[0]) is not None  # a row in Results, usable as a generator base


def test_generation_without_targets_says_so(tiny_models, make_window, run):
    write_tiny_ding_models(tiny_models)
    window = make_window()
    panel = window.compositions
    for box in panel.use.values():
        box.setChecked(False)
    assert run(panel.generate(), timeout=30) is None
    assert "at least one target" in panel.status.text()
