"""Model manifest checks and the eight-property predictor with tiny random models."""


import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from app.engine.core.errors import ModelError, StructureReadError
from app.engine.properties.predictor import PropertyPredictor
from app.engine.core.property_table import METALLIC_GAP_THRESHOLD_EV, PROPERTY_KEYS
from app.engine.core.registry import load_manifest, load_state_dict


def srtio3():
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])


def test_altered_weights_are_refused(tiny_models):
    with open(tiny_models / "band_gap.pt", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelError, match="do not match the manifest"):
        load_state_dict("band_gap", tiny_models)
    with pytest.raises(ModelError, match="band_gap"):
        PropertyPredictor.from_models(device="cpu", folder=tiny_models)


def test_missing_model_is_reported(tiny_models):
    (tiny_models / "elastic.pt").unlink()
    with pytest.raises(ModelError, match="missing"):
        PropertyPredictor.from_models(device="cpu", folder=tiny_models)


def test_unknown_device_is_refused(tiny_models):
    with pytest.raises(ModelError, match="Unknown device"):
        PropertyPredictor.from_models(device="tpu", folder=tiny_models)


def test_predictor_returns_eight_properties_in_order(tiny_models):
    predictor = PropertyPredictor.from_models(device="cpu", folder=tiny_models)
    [result] = predictor.predict([srtio3()])
    assert list(result.values) == list(PROPERTY_KEYS)
    assert result["bulk_modulus"] > 0 and result["shear_modulus"] > 0


def test_energy_per_atom_adds_elemental_references(tiny_models):
    predictor = PropertyPredictor.from_models(device="cpu", folder=tiny_models)
    refs = predictor.element_references
    [result] = predictor.predict([srtio3()])
    expected = result["formation_energy_per_atom"] + (refs["Sr"] + refs["Ti"] + 3 * refs["O"]) / 5
    assert result["energy_per_atom"] == pytest.approx(expected)


@pytest.mark.parametrize("raw_gap, metallic", [(-0.3, True), (METALLIC_GAP_THRESHOLD_EV / 2, True), (1.7, False)])
def test_optical_constants_undefined_for_metals(tiny_models, raw_gap, metallic):
    predictor = PropertyPredictor.from_models(device="cpu", folder=tiny_models)
    raw = {"formation_energy": np.array([-1.0]), "band_gap": np.array([raw_gap]),
           "elastic": np.array([2.0, 1.5, 0.3]), "optical": np.array([2.0])}
    values = predictor.assemble(srtio3(), raw).values
    if metallic:
        assert values["band_gap"] == 0.0
        assert values["refractive_index"] is None and values["dielectric_constant"] is None
    else:
        assert values["band_gap"] == pytest.approx(1.7)
        assert values["refractive_index"] == pytest.approx(2.0)
        assert values["dielectric_constant"] == pytest.approx(4.0)
    assert values["bulk_modulus"] == pytest.approx(100.0)


def test_disordered_and_empty_structures_give_errors_not_crashes(tiny_models):
    predictor = PropertyPredictor.from_models(device="cpu", folder=tiny_models)
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    results = predictor.predict([srtio3(), disordered, srtio3()])
    assert isinstance(results[1], StructureReadError)
    assert "partially occupied" in str(results[1])
    assert results[0].values == results[2].values


def test_progress_and_cancel(tiny_models):
    from app.engine.core.cancel import CancelToken
    from app.engine.core.errors import CancelledError

    predictor = PropertyPredictor.from_models(device="cpu", folder=tiny_models)
    seen = []
    predictor.predict([srtio3()] * 5, batch_size=2, progress=lambda d, t, m="": seen.append((d, t)))
    assert seen == [(2, 5), (4, 5), (5, 5)]
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        predictor.predict([srtio3()] * 5, batch_size=2, cancel=token)


def test_manifest_entry_round_trip(tiny_models):
    entries = load_manifest(tiny_models)
    assert set(entries) == {"formation_energy", "band_gap", "elastic", "optical", "density_vae", "segmentation_unet",
                            "structure_index", "pointnet"}
    assert all(len(e["sha256"]) == 64 for e in entries.values())


def test_load_model_builds_any_registered_kind_from_its_entry(tiny_models):
    from app.engine.core.registry import load_model, save_manifest_entry
    from app.engine.properties.cgcnn import CGCNN

    model, entry = load_model("band_gap", tiny_models)
    assert isinstance(model, CGCNN) and not model.training and entry["kind"] == "cgcnn"
    entries = load_manifest(tiny_models)
    save_manifest_entry("odd", dict(entries["band_gap"], kind="crystal_ball"), tiny_models)
    with pytest.raises(ModelError, match="kind 'crystal_ball'.*cannot build"):
        load_model("odd", tiny_models)
    other = dict(entries["band_gap"], architecture=dict(entries["band_gap"]["architecture"], hidden_dim=7))
    save_manifest_entry("other_shape", other, tiny_models)
    with pytest.raises(ModelError, match="does not match this version"):
        load_model("other_shape", tiny_models)


def test_predictor_from_models_equals_the_object_constructor(tiny_models):
    loaded = PropertyPredictor.from_models(tiny_models, device="cpu", precision="float32")
    built = PropertyPredictor(device="cpu", models=loaded.models, element_references=loaded.element_references,
                              precision="float32")
    assert loaded.predict([srtio3()])[0].values == built.predict([srtio3()])[0].values
