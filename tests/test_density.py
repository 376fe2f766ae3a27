"""Voxel representation (paper eq. 1–3) and its inversion by segmentation: round trips."""

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from app.engine.generation import density as D
from app.engine.core.errors import StructureReadError
from app.engine.generation.segmentation import decode, sites_from_maps, structure_from_sites


def nacl():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def cscl():
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def srtio3():
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])


def cu2mnal():
    # Full Heusler L2_1: Cu 8c, Mn 4a, Al 4b.
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.95), ["Cu", "Mn", "Al"],
                                     [[0.25, 0.25, 0.25], [0, 0, 0], [0.5, 0.5, 0.5]])


def ba2mgwo6():
    # Double perovskite, 40 sites: the largest cell the representation accepts.
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(8.1), ["Ba", "Mg", "W", "O"],
                                     [[0.25, 0.25, 0.25], [0, 0, 0], [0.5, 0.5, 0.5], [0.26, 0, 0]])


PROTOTYPES = {"NaCl": nacl, "CsCl": cscl, "SrTiO3": srtio3, "Cu2MnAl": cu2mnal}
MATCHER = StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10)


def round_trip(encoded):
    abc = D.lattice_from_coords(D.model_input(encoded)[1:])
    return decode(encoded.density, encoded.species, abc), abc


def max_site_error(decoded, reference):
    """Largest distance (Å) from a decoded site to the nearest reference site of its element."""
    errors = []
    for site in decoded:
        same = [s for s in reference if s.specie == site.specie]
        delta = np.array([s.frac_coords for s in same]) - site.frac_coords
        delta -= np.round(delta)
        errors.append(np.linalg.norm(delta * reference.lattice.abc, axis=1).min())
    return max(errors)


@pytest.mark.parametrize("name", sorted(PROTOTYPES))
@pytest.mark.parametrize("rotated", [False, True])
def test_true_maps_decode_to_the_same_crystal(name, rotated):
    encoded = D.encode(PROTOTYPES[name]())
    if rotated:
        encoded = D.random_rotation(encoded, np.random.default_rng(sorted(PROTOTYPES).index(name) + 1))
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


def test_primitive_cell_is_standardised_to_the_cubic_cell():
    encoded = D.encode(nacl().get_primitive_structure())
    assert len(encoded.structure) == 8
    np.testing.assert_allclose(encoded.lattice_abc, 5.64, atol=1e-6)


def test_non_cubic_structure_is_rejected():
    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                       [[0, 0, 0], [0.305, 0.305, 0]])
    with pytest.raises(StructureReadError, match="not cubic"):
        D.encode(rutile)


def test_more_than_forty_sites_is_rejected():
    # A general position of Pm-3m has 48 sites in the primitive cubic cell.
    crowded = Structure.from_spacegroup("Pm-3m", Lattice.cubic(10.0), ["Cu"], [[0.1, 0.2, 0.3]])
    assert len(crowded) == 48
    with pytest.raises(StructureReadError, match="at most 40"):
        D.encode(crowded)


def test_disordered_structure_is_rejected():
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    with pytest.raises(StructureReadError, match="disordered"):
        D.encode(alloy)


def test_radii_use_the_likely_oxidation_state():
    structure = nacl()
    radii = D.site_radii(structure)
    symbols = [site.specie.symbol for site in structure]
    chloride = radii[[s == "Cl" for s in symbols]]
    sodium = radii[[s == "Na" for s in symbols]]
    # Cl⁻ is ~1.67–1.81 Å; the reference's all-states average (0.78 Å) is meaningless for it.
    assert np.all((chloride > 1.6) & (chloride < 1.85))
    assert np.all((sodium > 1.0) & (sodium < 1.2))


def test_intermetallic_radii_fall_back_to_element_values_within_bounds():
    radii = D.site_radii(cu2mnal())  # no charge-balanced oxidation states exist
    assert np.all((radii >= D.MIN_RADIUS) & (radii <= D.MAX_RADIUS))
    assert np.all(radii > 0.5)


def test_maps_have_documented_shapes_dtypes_and_content():
    encoded = D.encode(nacl())
    g = D.GRID
    assert encoded.density.shape == (g, g, g) and encoded.density.dtype == np.float32
    assert encoded.species.shape == (g, g, g) and encoded.species.dtype == np.int16
    assert encoded.coords.shape == (3, g, g, g) and encoded.coords.dtype == np.float32
    assert set(np.unique(encoded.species)) == {0, 11, 17}
    assert np.all(encoded.density > 0)
    # Voxel centres span [-0.25a, 1.25a) symmetrically.
    h = 5.64 * 1.5 / g
    assert encoded.coords[0, 0, 0, 0] == pytest.approx(-0.25 * 5.64 + h / 2, abs=1e-5)
    assert encoded.coords[0, -1, 0, 0] == pytest.approx(1.25 * 5.64 - h / 2, abs=1e-5)
    # Periodic images: the map is translation-consistent, voxel k and the voxel one cell on
    # (21.33 voxels; compare through the atom at the origin and its copy at a).
    na_origin = np.argmax(encoded.density[:16, :16, :16])
    na_copy = np.argmax(encoded.density[16:, :16, :16])
    assert encoded.density[:16, :16, :16].flat[na_origin] == pytest.approx(
        encoded.density[16:, :16, :16].flat[na_copy], rel=1e-5)


def test_model_input_scaling_and_exact_inverses():
    encoded = D.encode(cu2mnal())
    x = D.model_input(encoded)
    assert x.shape == (4, D.GRID, D.GRID, D.GRID) and x.dtype == np.float32
    assert 0.0 < x[0].max() < 3.0  # O(1) density channel
    np.testing.assert_allclose(D.density_from_model(x[0]), encoded.density, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(D.lattice_from_coords(x[1:]), 5.95, atol=1e-5)
    np.testing.assert_allclose(D.lattice_from_coords(encoded.coords, scale=1.0), 5.95, atol=1e-5)


def test_lattice_from_noisy_coordinate_channels():
    encoded = D.encode(srtio3())
    channels = D.model_input(encoded)[1:]
    noisy = channels + np.random.default_rng(0).normal(0.0, 0.02, channels.shape)  # 0.2 Å noise
    noisy += 0.05  # and a constant offset
    np.testing.assert_allclose(D.lattice_from_coords(noisy), 3.905, atol=0.01)


def test_the_24_rotations_are_distinct_proper_and_consistent():
    mats = D.CUBE_ROTATIONS
    assert len(mats) == 24 and len({m.tobytes() for m in mats}) == 24
    assert all(round(np.linalg.det(m)) == 1 for m in mats)
    # An orthorhombic cell shows that lengths follow the axes.
    cell = Structure(Lattice.orthorhombic(4.0, 4.0, 4.0), ["Cs", "Cl"], [[0.1, 0.2, 0.3], [0.6, 0.55, 0.8]])
    encoded = D.encode(cell, standardize=False)
    for index in range(24):
        rotated = D.rotate(encoded, index)
        # Coordinates still give each voxel's position, with channel c increasing along axis c.
        np.testing.assert_allclose(rotated.coords, D.coordinate_grid(rotated.lattice_abc), atol=1e-5)
        # Rotating the maps equals encoding the rotated structure.
        again = D.encode(rotated.structure, standardize=False)
        np.testing.assert_allclose(again.density, rotated.density, rtol=1e-5, atol=1e-6)
        assert np.mean(again.species != rotated.species) < 1e-3


def test_rotation_permutes_lattice_lengths():
    cell = Structure(Lattice.orthorhombic(4.0, 4.002, 4.003), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    encoded = D.encode(cell, standardize=False)
    swap_xy = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]])
    rotated = D.rotate(encoded, swap_xy)
    np.testing.assert_allclose(rotated.lattice_abc, [4.002, 4.0, 4.003])
    recovered = D.lattice_from_coords(D.model_input(rotated)[1:])
    np.testing.assert_allclose(recovered, rotated.lattice_abc, atol=1e-4)


def test_rotation_rejects_improper_matrices():
    with pytest.raises(ValueError):
        D.rotate(D.encode(cscl()), -np.eye(3, dtype=int))


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


def test_species_features_describe_each_element_and_leave_background_zero():
    species = np.zeros((2, 4, 4, 4), dtype=np.uint8)
    species[0, 1, 1, 1] = 11
    species[1, 2, 2, 2] = 17
    features = D.species_features(species)
    assert features.shape == (2, D.N_SPECIES_FEATURES, 4, 4, 4)
    na, cl = features[0, :, 1, 1, 1], features[1, :, 2, 2, 2]
    assert na[0] == pytest.approx(0.11) and cl[0] == pytest.approx(0.17)
    assert na[2] == pytest.approx(1 / 18) and cl[2] == pytest.approx(17 / 18)
    assert cl[3] > na[3] > 0  # electronegativity
    assert np.count_nonzero(features[0].any(axis=0)) == 1


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
