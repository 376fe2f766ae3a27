"""``predict_files`` gives the same records with reader processes as without, in order."""

from __future__ import annotations

import shutil

import pytest

from app.engine.properties.predict_files import PARALLEL_THRESHOLD, predict_files


def add_marker(records: list[dict]) -> list[dict]:
    """A finishing step (module-level, so reader processes can run it)."""
    import os

    for record in records:
        record["finished_in"] = os.getpid()
    return records


@pytest.fixture
def many_cifs(tmp_path, example):
    folder = tmp_path / "cifs"
    folder.mkdir()
    stems = ["NaCl", "SrTiO3"]
    for i in range(PARALLEL_THRESHOLD + 6):
        shutil.copy(example(stems[i % 2]), folder / f"{i:03d}_{stems[i % 2]}.cif")
    (folder / "zz_broken.cif").write_text("data_x\n_cell_length_a 4\n")
    return folder


def test_reader_processes_give_the_same_records_in_order(tiny_models, many_cifs):
    from app.engine.properties.predictor import PropertyPredictor

    import os

    predictor = PropertyPredictor(device="cpu", folder=tiny_models)
    runs: list[list[dict]] = []
    parallel = predict_files([many_cifs], predictor, workers=2, batch_size=16, on_records=runs.append,
                             finish_records=add_marker)
    serial = predict_files([many_cifs], predictor, workers=1, batch_size=16, finish_records=add_marker)
    assert len(parallel) == len(serial) == PARALLEL_THRESHOLD + 7
    assert [r["source"] for r in parallel] == sorted(str(p) for p in many_cifs.iterdir())
    strip = lambda records: [{k: v for k, v in r.items() if k != "finished_in"} for r in records]
    assert strip(parallel) == strip(serial)
    assert [r for run in runs for r in run] == parallel  # each record once, in order, finished
    assert all(r["finished_in"] != os.getpid() for r in parallel)  # finished by the readers
    assert all(r["finished_in"] == os.getpid() for r in serial)
    assert parallel[-1]["error"] and all(r["error"] is None for r in parallel[:-1])
    assert all(r["model"] == "cgcnn" for r in parallel)


def test_loader_is_called_once_after_the_readers_start(tiny_models, many_cifs):
    from app.engine.properties.predictor import PropertyPredictor

    calls = []

    def loader():
        calls.append(1)
        return PropertyPredictor(device="cpu", folder=tiny_models)

    records = predict_files([many_cifs], loader, workers=2)
    assert calls == [1] and len(records) == PARALLEL_THRESHOLD + 7
