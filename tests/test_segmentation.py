"""Segmentation: decoded (or true) density and species maps back to crystals, round trips."""

import numpy as np
import pytest

from app.engine.core.errors import StructureReadError
from app.engine.generation import density as D
from app.engine.generation.segmentation import decode, sites_from_maps, structure_from_sites
from crystal_prototypes import MATCHER, PROTOTYPES, ba2mgwo6, cscl, max_site_error, nacl, round_trip, srtio3


@pytest.mark.parametrize("name", sorted(PROTOTYPES))
@pytest.mark.parametrize("rotated", [False, True])
def test_true_maps_decode_to_the_same_crystal(name, rotated):
    encoded = D.encode(PROTOTYPES[name]())
    if rotated:
        encoded = D.rotate(encoded, int(np.random.default_rng(sorted(PROTOTYPES).index(name) + 1).integers(len(D.CUBE_ROTATIONS))))
    decoded, abc = round_trip(encoded)
    reference = encoded.structure
    assert len(decoded) == len(reference)
    assert decoded.composition == reference.composition
    np.testing.assert_allclose(abc, reference.lattice.abc, atol=0.01)
    assert MATCHER.fit(decoded, reference)
    # Maps and structure share one frame, so sites come back where they were.
    assert max_site_error(decoded, reference) < 0.05


def test_forty_site_double_perovskite_round_trip():
    encoded = D.encode(ba2mgwo6())
    assert len(encoded.structure) == D.MAX_SITES
    decoded, _ = round_trip(encoded)
    assert decoded.composition == encoded.structure.composition
    assert MATCHER.fit(decoded, encoded.structure)
    # Light O squeezed between heavy W and Mg still comes back within a fraction of a voxel.
    assert max_site_error(decoded, encoded.structure) < 0.06


def test_speckled_labels_still_give_the_right_atoms():
    encoded = D.encode(nacl())
    rng = np.random.default_rng(3)
    labels = encoded.species.copy()
    occupied = np.argwhere(labels > 0)
    flipped = occupied[rng.random(len(occupied)) < 0.05]
    labels[tuple(flipped.T)] = rng.choice([11, 17], len(flipped))
    sites = sites_from_maps(encoded.density, labels, encoded.lattice_abc)
    assert sorted(z for z, _ in sites) == [11] * 4 + [17] * 4


def test_empty_map_raises_a_clear_error():
    encoded = D.encode(cscl())
    with pytest.raises(StructureReadError, match="No atoms"):
        decode(encoded.density, np.zeros_like(encoded.species), encoded.lattice_abc)


def test_unusable_lattice_raises():
    encoded = D.encode(cscl())
    with pytest.raises(StructureReadError):
        decode(encoded.density, encoded.species, [4.12, -1.0, 4.12])
    with pytest.raises(StructureReadError):
        structure_from_sites([(55, np.zeros(3))], [np.nan, 4.0, 4.0])


@pytest.mark.parametrize("name", sorted(PROTOTYPES))
def test_harmonising_true_maps_changes_nothing(name):
    from app.engine.generation.segmentation import harmonise_species

    encoded = D.encode(PROTOTYPES[name]())
    labels = encoded.species.astype(np.int64)
    assert np.array_equal(harmonise_species(labels, encoded.lattice_abc), labels)


def test_an_atom_labelled_with_two_similar_elements_becomes_one_site():
    from app.engine.generation.segmentation import harmonise_species

    encoded = D.encode(nacl())
    labels = encoded.species.astype(np.int64)
    # Decoder-like confusion: a third of each atom's voxels carry a chemically similar element.
    rng = np.random.default_rng(0)
    noisy = labels.copy()
    flip = rng.random(labels.shape) < 0.33
    noisy[flip & (labels == 11)] = 19  # Na → K
    noisy[flip & (labels == 17)] = 35  # Cl → Br
    assert len(decode(encoded.density, noisy, encoded.lattice_abc)) > 8
    decoded = decode(encoded.density, noisy, encoded.lattice_abc, harmonise=True)
    assert decoded.composition.reduced_formula == "NaCl" and len(decoded) == 8
    assert decoded.matches(encoded.structure)
    # Voxels go back to their atom's element, except a few on borders between atoms.
    harmonised = harmonise_species(noisy, encoded.lattice_abc)
    occupied = labels > 0
    assert np.mean(harmonised[occupied] == labels[occupied]) > 0.9 > np.mean(noisy[occupied] == labels[occupied])


@pytest.mark.parametrize("name", sorted(PROTOTYPES))
def test_generator_segmentation_settings_keep_every_atom_of_true_maps(name):
    from app.engine.generation.generator import MIN_BALL_FRACTION

    encoded = D.encode(PROTOTYPES[name]())
    decoded = decode(encoded.density, encoded.species, encoded.lattice_abc, harmonise=True,
                     min_ball_fraction=MIN_BALL_FRACTION)
    assert len(decoded) == len(encoded.structure) and decoded.matches(encoded.structure)


def test_a_fragment_much_smaller_than_an_ion_is_not_an_atom():
    encoded = D.encode(srtio3())
    labels = encoded.species.astype(np.int64)
    # A decoder artefact: a 0.45 Å blob labelled Ba inside the edge of every copy of the Sr ball
    # (1.2 Å from its centre), about 3 % of a Ba ion's volume.
    a = encoded.lattice_abc[0]
    u = np.mod(D.box_fractions() - 1.2 / a + 0.5, 1.0) - 0.5
    w = np.mod(D.box_fractions() + 0.5, 1.0) - 0.5
    distance = a * np.sqrt(u[:, None, None] ** 2 + w[None, :, None] ** 2 + w[None, None, :] ** 2)
    fragment = np.where(distance < 0.45, 56, labels)
    with_fragment = decode(encoded.density, fragment, encoded.lattice_abc)
    assert with_fragment.composition["Ba"] == 1 and len(with_fragment) == 6
    kept = decode(encoded.density, fragment, encoded.lattice_abc, min_ball_fraction=0.1)
    assert kept.composition.reduced_formula == "SrTiO3" and len(kept) == 5

