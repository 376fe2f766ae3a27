"""CDVAE coverage metrics and SMACT compositional validity on tiny sets."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from app.engine.training.coverage import (CompositionScaler, Fingerprints, coverage, fingerprint_structures,
                                          smact_valid)


def rock_salt(a=5.64, elements=("Na", "Cl")):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(elements), [[0, 0, 0], [0.5, 0.5, 0.5]])


def perovskite(a=3.9, elements=("Sr", "Ti", "O")):
    return Structure(Lattice.cubic(a), [elements[0], elements[1]] + [elements[2]] * 3,
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def unit_scaler():
    return CompositionScaler(np.zeros(132), np.ones(132))


def synthetic(structure_rows, composition_rows):
    s, c = np.asarray(structure_rows, float), np.asarray(composition_rows, float)
    return Fingerprints(s, c, np.ones(len(s), dtype=bool))


@pytest.mark.parametrize("formula, valid", [("NaCl", True), ("NaCl2", False), ("SrTiO3", True), ("Fe", True),
                                            ("FeNi3", True), ("Na2O", True), ("NaO3", False), ("CsCl", True)])
def test_smact_validity_of_known_compositions(formula, valid):
    assert smact_valid(formula) is valid


def test_identical_sets_cover_each_other_fully():
    structures = [rock_salt(), perovskite(), perovskite(4.1, ("Ba", "Zr", "O"))]
    fingerprints = fingerprint_structures(structures)
    assert fingerprints.ok.all() and fingerprints.structure.shape == (3, 61)
    result = coverage(fingerprints, fingerprints, unit_scaler(), 0.2, 4.0)
    assert result["cov_recall"] == 1.0 and result["cov_precision"] == 1.0
    assert result["amsd_recall"] == pytest.approx(0.0, abs=1e-9)


def test_identical_fingerprints_of_one_crystal_are_computed_once():
    fingerprints = fingerprint_structures([perovskite(), perovskite(), None])
    assert fingerprints.ok.tolist() == [True, True, False]
    np.testing.assert_array_equal(fingerprints.structure[0], fingerprints.structure[1])


def test_disjoint_sets_cover_nothing():
    reference = synthetic(np.zeros((4, 61)), np.zeros((4, 132)))
    far_structures = synthetic(np.ones((3, 61)), np.zeros((3, 132)))         # structures differ
    far_compositions = synthetic(np.zeros((3, 61)), np.full((3, 132), 10.0))  # compositions differ
    for generated in (far_structures, far_compositions):
        result = coverage(generated, reference, unit_scaler(), 0.2, 4.0)
        assert result["cov_recall"] == 0.0 and result["cov_precision"] == 0.0


def test_failed_samples_count_against_precision_only():
    reference = synthetic(np.zeros((2, 61)), np.zeros((2, 132)))
    generated = Fingerprints(np.vstack([np.zeros((1, 61)), np.full((1, 61), np.nan)]),
                             np.vstack([np.zeros((1, 132)), np.full((1, 132), np.nan)]), np.array([True, False]))
    result = coverage(generated, reference, unit_scaler(), 0.2, 4.0)
    assert result["cov_recall"] == 1.0 and result["cov_precision"] == 0.5


def test_partial_overlap_and_the_cutoffs():
    reference = synthetic(np.zeros((4, 61)), np.zeros((4, 132)))
    reference.structure[2:] = 5.0
    generated = synthetic(np.full((2, 61), 0.01), np.zeros((2, 132)))
    generated.structure[1] = 9.0
    result = coverage(generated, reference, unit_scaler(), 0.2, 4.0)
    assert result["cov_recall"] == 0.5 and result["cov_precision"] == 0.5
    assert coverage(generated, reference, unit_scaler(), 0.01, 4.0)["cov_recall"] == 0.0


def test_scaled_composition_distances_ignore_missing_properties():
    scaler = CompositionScaler(np.ones(132), np.full(132, 2.0))
    features = np.ones((1, 132))
    features[0, 0] = np.nan
    np.testing.assert_array_equal(scaler.transform(features), np.zeros((1, 132)))
