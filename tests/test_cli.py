"""The headless ``crystal-designer`` command with tiny random models."""

import csv
import io
import json

import pytest

from app.cli import main
from app.engine.core.property_table import PROPERTY_KEYS


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


def test_generate_writes_kept_candidates_and_funnel(tiny_models, example, tmp_path, capsys):
    out = tmp_path / "candidates"
    status, stdout, err = _run(capsys, "generate", "--base", str(example("NaCl")), "--n", "6", "--seed", "3",
                               "--out", str(out), "--allow-known", "--allow-unbalanced", "--min-distance", "0")
    assert status == 0, err
    payload = json.loads(stdout)
    stages = [s["stage"] for s in payload["funnel"]]
    assert stages[0] == "generated" and stages[-1] == "structurally_novel"
    counts = [s["count"] for s in payload["funnel"]]
    assert counts[0] == 6 and counts == sorted(counts, reverse=True)
    assert len(payload["candidates"]) == counts[-1]
    for record in payload["candidates"]:
        assert (out / record["file"].split("/")[-1]).exists()
        assert {"formula", "flags", "latent_distance", *PROPERTY_KEYS} <= set(record)


def test_generate_refuses_non_cubic_base(tiny_models, example, capsys):
    status, _, err = _run(capsys, "generate", "--base", str(example("TiO2_rutile")), "--n", "2")
    assert status == 2
    assert "cubic" in err


def test_reconstruct_writes_one_cif_per_input_and_explains_failures(tiny_models, example, tmp_path, capsys):
    status, stdout, _ = _run(capsys, "reconstruct", str(example("CsCl")), str(example("TiO2_rutile")),
                             "--out", str(tmp_path / "rec"))
    records = json.loads(stdout)
    assert status == 1
    by_stem = {r["source"].split("/")[-1]: r for r in records}
    assert "cubic" in by_stem["TiO2_rutile.cif"]["error"]
    cscl = by_stem["CsCl.cif"]
    # Random networks may decode to nothing; either a CIF named after the input or a reason.
    assert (cscl["file"] and cscl["file"].endswith("CsCl.cif")) or cscl["error"]


def test_bad_window_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--base", "x.cif", "--window", "band_gap"])
