"""``crystal-designer generate`` with the relaxation, hull and novelty options (tiny random models,
a fake relaxation and a fake hull standing in for CHGNet and the reference hull)."""

import json

import pytest

from app.cli import main
from app.engine.generation.generator import CrystalGenerator
from tests.test_funnel import FakeHull, FakeRelax, cscl_type, rock_salt

#: What the fake decoder returns, in turn: known rock salt, two novel arrangements (one far from
#: the fake hull), a squashed cell, and the CsCl-type NaCl again (a duplicate).
DECODED = [rock_salt(5.6), cscl_type(3.4), cscl_type(3.9, "K"), cscl_type(1.0), cscl_type(3.45)]


def fake_decode(self, z, decile):
    import numpy as np

    return [(DECODED[n % len(DECODED)].copy(), np.zeros((32, 32, 32), np.float32), None) for n in range(len(z))]


@pytest.fixture
def fake_stability(monkeypatch):
    relax = FakeRelax()
    hull = FakeHull({"NaCl": 0.05, "KCl": 0.2})
    monkeypatch.setattr(CrystalGenerator, "decode_latents", fake_decode)
    monkeypatch.setattr(CrystalGenerator, "hull", property(lambda self: hull))
    monkeypatch.setattr(CrystalGenerator, "relax", property(lambda self: relax))
    return relax


def generate(capsys, example, *options):
    status = main(["generate", "--base", str(example("NaCl")), "--n", "10", "--seed", "3", "--allow-unbalanced",
                   "--min-distance", "0", "--device", "cpu", *options])
    out = capsys.readouterr()
    assert status == 0, out.err
    return json.loads(out.out)


def test_relaxed_records_carry_stability_and_novelty(tiny_models, example, tmp_path, capsys, fake_stability):
    out = tmp_path / "candidates"
    payload = generate(capsys, example, "--max-e-above-hull", "0.3", "--out", str(out))
    stages = [s["stage"] for s in payload["funnel"]]
    assert stages[-3:] == ["relaxed", "near_hull", "structurally_novel"]
    counts = [s["count"] for s in payload["funnel"]]
    assert counts == sorted(counts, reverse=True) and len(payload["candidates"]) == counts[-1]
    assert payload["settings"]["relax"] is True and payload["settings"]["max_e_above_hull"] == 0.3
    funnel = dict(zip(stages, counts))
    # 10 decoded, 2 squashed; 6 duplicates before relaxing; rock salt is known.
    assert (funnel["bonds_ok"], funnel["unique"], funnel["near_hull"], funnel["structurally_novel"]) == (8, 3, 3, 2)
    assert payload["sun"] == 2
    assert fake_stability.calls == [3]  # only the kept, deduplicated candidates are relaxed
    for record in payload["candidates"]:
        assert record["relaxation_state"] == "relaxed" and record["relaxation"]["error"] is None
        assert record["e_above_hull"] <= 0.3 and record["novelty"] == "novel"
        assert record["relaxed_space_group"] and "decomposition" in record
    assert payload["candidates"], "the tiny generator should keep some candidates here"
    # The CIFs are the relaxed cells (the fake relaxation expands them by 2 %) unless asked otherwise.
    from pymatgen.core import Structure

    unrelaxed = generate(capsys, example, "--max-e-above-hull", "0.3", "--out", str(tmp_path / "raw"),
                         "--unrelaxed-cifs")
    for relaxed_record, raw_record in zip(payload["candidates"], unrelaxed["candidates"]):
        assert Structure.from_file(relaxed_record["file"]).volume == pytest.approx(
            1.02 * Structure.from_file(raw_record["file"]).volume, rel=1e-3)


def test_no_relax_and_threshold_flags(tiny_models, example, capsys, fake_stability):
    strict = generate(capsys, example, "--no-relax", "--max-e-above-hull", "0.01")
    assert fake_stability.calls == []
    assert strict["settings"]["relax"] is False
    funnel = {s["stage"]: s["count"] for s in strict["funnel"]}
    assert funnel["relaxed"] == funnel["unique"]  # nothing relaxed, nothing removed for it
    # NaCl sits 0.05, KCl 0.2 eV/atom above the fake hull: a 0.01 threshold drops them all.
    assert funnel["near_hull"] == 0 and strict["candidates"] == [] and strict["sun"] == 0
    loose = generate(capsys, example, "--no-relax", "--allow-far-from-hull")
    assert {s["stage"]: s["count"] for s in loose["funnel"]}["near_hull"] == funnel["relaxed"]
    assert [r["relaxation_state"] for r in loose["candidates"]] == ["not relaxed"] * 2
    assert sorted(r["novelty"] for r in loose["candidates"]) == ["novel", "novel"]


def test_impossible_threshold_is_refused(tiny_models, example, capsys):
    status = main(["generate", "--base", str(example("NaCl")), "--n", "2", "--max-e-above-hull", "-1"])
    assert status == 2 and "above-hull" in capsys.readouterr().err
