"""Plots: each renders with data, exports PNG/SVG and CSV; XRD labels (hkl) on hover."""

from __future__ import annotations

import csv

import numpy as np
from gui_support import kept_candidate_payload, requires_display, wait_until

pytestmark = requires_display


def _drawn_pixels(plot) -> float:
    """Share of non-white pixels of the rendered figure."""
    plot.canvas.draw()
    image = np.asarray(plot.canvas.buffer_rgba())[..., :3].astype(int)
    return float(np.any(image < 245, axis=2).mean())


def _exports(plot, tmp_path, rows: int) -> None:
    plot.export_figure(tmp_path / "figure.png")
    plot.export_figure(tmp_path / "figure.svg")
    assert (tmp_path / "figure.png").stat().st_size > 5000
    assert (tmp_path / "figure.svg").read_text().lstrip().startswith("<?xml")
    plot.export_csv(tmp_path / "data.csv")
    with (tmp_path / "data.csv").open() as stream:
        table = list(csv.reader(stream))
    assert len(table) - 1 == rows


def test_powder_xrd_of_two_selected_rows(window, run, example, tmp_path):
    records = run(window.open_paths([example("NaCl"), example("CsCl")]))
    window.library.select(records)
    plot = window.plots.show_xrd(wavelength=1.54184)
    run(wait_until(lambda: plot.task.done(), timeout=60, message="XRD patterns"))
    plot.task.result()
    assert [p.name for p in plot.patterns] == [r.name for r in records]
    nacl = plot.patterns[0]
    strongest = nacl.two_theta[np.argmax(nacl.intensity)]
    assert abs(strongest - 31.7) < 0.3  # NaCl (200) with Cu Kα
    assert "(2 0 0)" in plot.peak_label(strongest, 50.0)
    assert plot.peak_label(15.0, 50.0) is None  # no NaCl peak there
    assert _drawn_pixels(plot) > 0.02
    _exports(plot, tmp_path, rows=len(nacl.two_theta) + len(plot.patterns[1].two_theta))
    plot.close()


def test_funnel_and_property_distributions(window, run, example, tmp_path):
    from app.ui.records import candidate_record

    records = run(window.open_paths([example("CsCl")]))
    candidates = [candidate_record(kept_candidate_payload(records[0].structure, index=i), "CsCl.cif")
                  for i in range(4)]
    for offset, candidate in enumerate(candidates):
        candidate.properties = {k: (v + 0.1 * offset if v is not None else None)
                                for k, v in candidate.properties.items()}
    window.model.add(candidates)
    assert window.plots.show_funnel() is None  # nothing generated yet
    window.controller.generation_finished.emit({"generated": 10, "decoded": 8, "distance_ok": 6}, "done")
    funnel = window.plots.show_funnel()
    assert funnel.table["count"] == [10, 8, 6] and _drawn_pixels(funnel) > 0.02
    _exports(funnel, tmp_path, rows=3)
    window.targets.set_window("band_gap", 2.0, 3.5)
    distributions = window.plots.show_distributions()
    assert len(distributions.table["band_gap"]) == 4 and _drawn_pixels(distributions) > 0.02
    _exports(distributions, tmp_path, rows=4)
    funnel.close()
    distributions.close()


def test_models_dialog_shows_parity_or_says_how_to_get_it(qtbot, tmp_path):
    from app.ui.plots.models import NO_PARITY, ModelsDialog

    true = np.linspace(-3, 0, 50)
    manifest = {"models": {
        "formation_energy": {"units": {"formation_energy_per_atom": "eV/atom"},
                             "metrics": {"validation_mae": {"formation_energy_per_atom": 0.045},
                                         "parity_sample": {"formation_energy_per_atom": {
                                             "true": true.tolist(), "predicted": (true + 0.05).tolist()}}}},
        "band_gap": {"units": {"band_gap": "eV"}, "metrics": {"validation_mae": {"band_gap": 0.26}}},
    }}
    dialog = ModelsDialog(manifest)
    qtbot.addWidget(dialog)
    dialog.list.setCurrentRow([name for name, _ in dialog.rows].index("formation_energy"))
    assert len(dialog.parity.table["true"]) == 50 and "MAE 0.05 eV/atom" in dialog.parity.figure.axes[0].get_title()
    assert _drawn_pixels(dialog.parity) > 0.02
    _exports(dialog.parity, tmp_path, rows=50)
    dialog.list.setCurrentRow([name for name, _ in dialog.rows].index("band_gap"))
    assert NO_PARITY.format(name="band_gap") in dialog.parity.message.text()
    assert "MAE band_gap: 0.26 eV" in dialog.parity.message.text()


def test_models_dialog_draws_the_shipped_parity_samples(qtbot, tmp_path):
    """The shipped property models carry parity samples (``crystal-designer evaluate NAME --record``)."""
    from app.engine.core.registry import load_manifest
    from app.ui.plots.models import ModelsDialog

    manifest = load_manifest()
    dialog = ModelsDialog({"models": manifest})
    qtbot.addWidget(dialog)
    names = [name for name, _ in dialog.rows]
    for name in ("formation_energy", "band_gap", "elastic", "optical"):
        sample = manifest[name]["metrics"]["parity_sample"]
        dialog.list.setCurrentRow(names.index(name))
        assert len(dialog.parity.figure.axes) == len(sample)  # one panel per target
        assert dialog.parity.has_data and len(dialog.parity.table["true"]) == sum(len(s["true"]) for s in sample.values())
        assert all("MAE" in axes.get_title() for axes in dialog.parity.figure.axes)
    dialog.list.setCurrentRow(names.index("formation_energy"))
    mae = manifest["formation_energy"]["metrics"]["validation_mae"]["formation_energy_per_atom"]
    assert f"MAE {mae:.3g} eV/atom" in dialog.parity.figure.axes[0].get_title()
    assert _drawn_pixels(dialog.parity) > 0.02
    _exports(dialog.parity, tmp_path, rows=len(dialog.parity.table["true"]))
