"""The shipped generator (models/density_vae.pt) on real crystals: integration tests."""

import warnings

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher

from app.engine.io.crystal_io import read_crystal_file
from app.engine.generation.density import conventional_cubic_cell
from app.engine.generation.generator import CrystalGenerator, GenerationSettings


@pytest.fixture(scope="module")
def generator():
    made = CrystalGenerator.from_models(device="cpu", segmentation_workers=1)
    yield made
    made.close()


def _structure(example, stem):
    return read_crystal_file(example(stem))[0].structure


@pytest.mark.parametrize("stem", [
    "SrTiO3", "CsCl", "GaAs", "Cu2MnAl",
    # Known failure of the shipped weights: extra Cl sites appear in rock salt (README, limits).
    pytest.param("NaCl", marks=pytest.mark.xfail(strict=True, reason="rock salt decodes with extra Cl sites")),
])
def test_known_crystals_are_reconstructed(generator, example, stem):
    structure = conventional_cubic_cell(_structure(example, stem))
    decoded = generator.reconstruct(structure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10).fit(structure, decoded), decoded
    assert abs(decoded.lattice.a - structure.lattice.a) < 0.15


def test_candidates_around_srtio3_are_mostly_valid_perovskites(generator, example):
    base = _structure(example, "SrTiO3")
    # σ 0.5: the decoder's own neighbourhood of the base (the default σ 1.5 deliberately ranges wider).
    settings = GenerationSettings(mode="around", count=40, seed=3, sigma=0.5, require_novel=False)
    result = generator.generate(settings, base=base)
    assert result.funnel["generated"] == 40
    assert result.funnel["distance_ok"] >= 32  # ≥ 80 % structurally valid
    formulas = [c.formula for c in result.candidates if c.flags.get("distance_ok")]
    # Generation stays near the base: most valid candidates keep its 5-atom ABX3 form.
    assert np.mean([f is not None and f.endswith("O3") for f in formulas]) > 0.5
