"""Voxel representation (paper eq. 1–3): encoding, scaling, rotations of the cube."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from app.engine.core.errors import StructureReadError
from app.engine.generation import density as D
from crystal_prototypes import cscl, cu2mnal, nacl, srtio3


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



def test_augmentation_draws_all_48_cube_operations_and_transforms_like_rotate():
    rng = np.random.default_rng(0)
    drawn = {D.random_cube_operation(rng) for _ in range(3000)}
    assert len(drawn) == 48
    encoded = D.encode(srtio3())
    for index, matrix in enumerate(D.CUBE_ROTATIONS):
        axes = tuple(int(np.flatnonzero(row)[0]) for row in matrix)
        flips = tuple(a for a in range(3) if matrix[a, axes[a]] < 0)
        np.testing.assert_array_equal(D.apply_cube_operation(encoded.density, axes, flips),
                                      D.rotate(encoded, index).density)
    stacked = np.stack([encoded.density, encoded.density])
    np.testing.assert_array_equal(D.apply_cube_operation(stacked, (2, 0, 1), (1,))[1],
                                  D.apply_cube_operation(encoded.density, (2, 0, 1), (1,)))


def test_voxel_size_is_one_formula_for_floats_and_arrays():
    assert D.voxel_size(4.0) == pytest.approx(4.0 * D.BOX_SPAN / D.GRID)
    sizes = D.voxel_size(np.array([4.0, 8.0]))
    assert sizes.dtype == np.float32 and sizes[1] == pytest.approx(2 * sizes[0])
