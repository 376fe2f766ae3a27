"""Choosing the property predictor in the window: each Results row says which one produced it."""

from app.ui.results_model import COLUMN_INDEX


def _row_values(window, key):
    model = window.results.filter
    return [model.data(model.index(row, COLUMN_INDEX[key])) for row in range(model.rowCount())]


def test_switching_the_predictor_changes_the_rows_model_label(window, run, example):
    assert window.settings.predictor == "cgcnn" and window.predictor_actions["cgcnn"].isChecked()
    run(window.controller.open_paths([example("NaCl")]))
    assert _row_values(window, "model") == ["cgcnn"]
    cgcnn_energy = _row_values(window, "formation_energy_per_atom")

    window.predictor_actions["pointnet"].trigger()  # the Predictor menu, as a user picks it
    assert window.settings.predictor == "pointnet" and not window.predictor_actions["cgcnn"].isChecked()
    run(window.controller.open_paths([example("NaCl")]))  # re-opening predicts it again
    assert _row_values(window, "model") == ["pointnet"]
    assert _row_values(window, "formation_energy_per_atom") != cgcnn_energy
    assert [r.model for r in window.model.records] == ["pointnet"]

    window.predictor_actions["cgcnn"].trigger()
    run(window.controller.open_paths([example("NaCl")]))
    assert _row_values(window, "model") == ["cgcnn"]
    assert _row_values(window, "formation_energy_per_atom") == cgcnn_energy
