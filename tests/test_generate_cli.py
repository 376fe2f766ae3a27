"""``crystal-designer generate --hull-energy``: which formation energy of a relaxed candidate is placed
on the hull (tiny random models, a fake relaxation and a recording hull)."""

import json

import pytest

from app.cli import main
from app.engine.generation.generator import CrystalGenerator
from tests.test_funnel import FakeHullResult, FakeRelax
from tests.test_funnel_cli import fake_decode


class RecordingHull:
    """Every composition is 0.01 eV/atom above the hull; remembers the energies it was given."""

    def __init__(self):
        self.energies = {}

    def e_above_hull(self, composition, formation_energy_per_atom):
        self.energies.setdefault(composition.reduced_formula, []).append(formation_energy_per_atom)
        return FakeHullResult(0.01, composition.reduced_formula)


@pytest.fixture
def recording_hull(monkeypatch):
    relax, hull = FakeRelax(), RecordingHull()
    monkeypatch.setattr(CrystalGenerator, "decode_latents", fake_decode)
    monkeypatch.setattr(CrystalGenerator, "hull", property(lambda self: hull))
    monkeypatch.setattr(CrystalGenerator, "relax", property(lambda self: relax))
    return hull


def placed(capsys, example, hull, source):
    hull.energies.clear()
    options = ["--hull-energy", source] if source else []
    status = main(["generate", "--base", str(example("NaCl")), "--n", "10", "--seed", "3", "--allow-unbalanced",
                   "--min-distance", "0", "--device", "cpu", "--allow-known", *options])
    out = capsys.readouterr()
    assert status == 0, out.err
    payload = json.loads(out.out)
    return payload, {formula: values[0] for formula, values in hull.energies.items()}


def test_hull_energy_flag_chooses_the_formation_energy(tiny_models, example, capsys, recording_hull):
    from app.engine.generation.settings import GenerationSettings

    default, by_default = placed(capsys, example, recording_hull, None)
    assert default["settings"]["hull_energy"] == GenerationSettings().hull_energy
    results = {source: placed(capsys, example, recording_hull, source) for source in ("predicted", "chgnet", "mean")}
    for source, (payload, _energies) in results.items():
        assert payload["settings"]["hull_energy"] == source
        assert payload["candidates"] and all(r["relaxation_state"] == "relaxed" for r in payload["candidates"])
    predicted, chgnet, mean = (results[s][1] for s in ("predicted", "chgnet", "mean"))
    assert set(predicted) == set(chgnet) == set(mean) and predicted
    # The predicted route places the predictions of the relaxed cells, the CHGNet route the fake
    # relaxation's -5 eV/atom minus the elemental references; the mean is their weighted mean.
    from app.engine.stability.formation import CHGNET_HULL_WEIGHT as w

    for formula in predicted:
        assert chgnet[formula] != pytest.approx(predicted[formula])
        assert mean[formula] == pytest.approx(w * chgnet[formula] + (1 - w) * predicted[formula])
    assert by_default == results[GenerationSettings().hull_energy][1]


def test_unknown_hull_energy_is_refused(tiny_models, example, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--base", str(example("NaCl")), "--hull-energy", "dft"])
    assert "invalid choice" in capsys.readouterr().err
