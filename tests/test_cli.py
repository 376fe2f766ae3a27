"""The headless ``crystal-designer`` command with tiny random models."""

import csv
import io
import json

import pytest

from app.cli import main
from app.engine.properties import PROPERTY_KEYS


def _run(capsys, *argv):
    status = main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


def test_predict_json_has_one_record_per_structure(tiny_models, example, capsys):
    status, out, _ = _run(capsys, "predict", str(example("NaCl")), str(example("SrTiO3")), "--device", "cpu")
    assert status == 0
    records = json.loads(out)
    assert [r["formula"] for r in records] == ["NaCl", "SrTiO3"]
    for record in records:
        assert {"source", "formula", "error", *PROPERTY_KEYS} <= set(record)
        assert record["error"] is None
        assert isinstance(record["formation_energy_per_atom"], float)


def test_predict_folder_csv_and_failures_set_exit_status(tiny_models, example, tmp_path, capsys):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "good.cif").write_text(example("CsCl").read_text())
    (folder / "empty.cif").write_text("")
    (folder / "notes.txt").write_text("not a crystal")
    status, out, err = _run(capsys, "predict", str(folder), "--format", "csv")
    assert status == 1
    rows = {r["source"].split("/")[-1]: r for r in csv.DictReader(io.StringIO(out))}
    assert set(rows) == {"good.cif", "empty.cif"}
    assert rows["good.cif"]["formula"] == "CsCl" and rows["good.cif"]["error"] == ""
    assert "empty" in rows["empty.cif"]["error"].lower()
    assert rows["empty.cif"]["band_gap"] == ""


def test_predict_reports_missing_models_clearly(tmp_path, monkeypatch, example, capsys):
    monkeypatch.setenv("CRYSTAL_DESIGNER_MODELS", str(tmp_path / "nowhere"))
    status, _, err = _run(capsys, "predict", str(example("NaCl")))
    assert status == 2
    assert "formation_energy" in err and "manifest" in err


def test_unknown_model_name_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["train", "no_such_model"])
