"""Viewer geometry without a window: atoms, bonds, cell, density placement (pyvista, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from app.engine.generation.density import BOX_MARGIN, GRID, encode
from app.ui import scene


def _symbols(atoms, pairs):
    return {tuple(sorted((atoms.symbols[i], atoms.symbols[j]))) for i, j in pairs}


def test_rock_salt_cell_shows_face_atoms_and_only_cation_anion_bonds(example):
    from app.engine.io.crystal_io import read_crystal_file

    nacl = read_crystal_file(example("NaCl"))[0].structure
    atoms = scene.display_atoms(nacl)
    assert len(atoms.symbols) == 27  # 8 sites + their copies on faces, edges and corners
    pairs = scene.bond_pairs(atoms)
    assert _symbols(atoms, pairs) == {("Cl", "Na")}
    lengths = np.linalg.norm(atoms.positions[pairs[:, 0]] - atoms.positions[pairs[:, 1]], axis=1)
    assert lengths == pytest.approx(5.64 / 2, abs=0.01)


def test_metal_metal_bonds_are_kept_only_in_intermetallics():
    perovskite = Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.9), ["Sr", "Ti", "O"],
                                           [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])
    atoms = scene.display_atoms(perovskite)
    assert ("Sr", "Sr") not in _symbols(atoms, scene.bond_pairs(atoms))
    iron = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    atoms = scene.display_atoms(iron)
    assert _symbols(atoms, scene.bond_pairs(atoms)) == {("Fe", "Fe")}


def test_supercell_repeats_the_cell():
    cell = Structure(Lattice.cubic(3.0), ["Po"], [[0, 0, 0]])
    assert len(scene.display_atoms(cell, (2, 3, 1)).symbols) == 3 * 4 * 2


def test_cell_outline_has_twelve_edges():
    outline = scene.cell_outline(np.diag([3.0, 4.0, 5.0]))
    assert outline.n_lines == 12
    assert outline.bounds[1::2] == pytest.approx((3.0, 4.0, 5.0))


def test_density_grid_spans_the_box_around_the_cell(example):
    from app.engine.io.crystal_io import read_crystal_file

    encoded = encode(read_crystal_file(example("CsCl"))[0].structure)
    a = encoded.lattice_abc[0]
    view = scene.DensityView(encoded.density, tuple(encoded.lattice_abc), encoded.structure)
    grid = scene.density_grid(view)
    voxel = a * (1 + 2 * BOX_MARGIN) / GRID
    assert grid.origin[0] == pytest.approx(-BOX_MARGIN * a + voxel / 2)
    assert grid.spacing[0] == pytest.approx(voxel)
    # The densest voxel sits on an atom (Cs at the corners, Cl at the centre).
    densest = np.array(grid.points[np.argmax(grid.point_data["density"])])
    frac = np.mod(densest / a + 1e-9, 1.0)
    assert np.min(np.abs(frac[:, None] - np.array([0.0, 0.5, 1.0])), axis=1).max() < voxel / a
    low, high = scene.level_range(encoded.density)
    surface = scene.isosurface(grid, scene.level_at(0.7, low, high))
    assert surface is not None and surface.n_points > 0


def test_face_images_remember_their_site_and_polyhedra_surround_cations():
    perovskite = Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.9), ["Sr", "Ti", "O"],
                                           [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])
    atoms = scene.display_atoms(perovskite)
    corner_images = [i for i, s in enumerate(atoms.symbols) if s == "Sr"]
    assert len(corner_images) == 8 and set(atoms.site_indices[corner_images]) == {0}
    assert np.allclose(atoms.frac @ perovskite.lattice.matrix, atoms.positions)
    polyhedra = scene.polyhedra_mesh(atoms, scene.bond_pairs(atoms))
    assert polyhedra is not None and polyhedra.n_cells == 8  # one octahedron around Ti


def test_shortest_image_distance_and_angle_of_picks(example):
    from app.engine.io.crystal_io import read_crystal_file
    from app.ui.viewer_panel import pick_report

    nacl = read_crystal_file(example("NaCl"))[0].structure
    atoms = scene.display_atoms(nacl)
    sodium = [i for i, s in enumerate(atoms.symbols) if s == "Na"]
    far = max(sodium, key=lambda i: np.linalg.norm(atoms.positions[i]))
    assert "0.00 Å" in pick_report(nacl, atoms, [sodium[0], far])  # images of one site
    assert "as drawn" in pick_report(nacl, atoms, [sodium[0], far])
    chlorine = min((i for i, s in enumerate(atoms.symbols) if s == "Cl"),
                   key=lambda i: np.linalg.norm(atoms.positions[i] - atoms.positions[far]))
    assert "2.82 Å" in pick_report(nacl, atoms, [far, chlorine])
    a = nacl.lattice.a

    def at(symbol, frac):
        return next(i for i, s in enumerate(atoms.symbols) if s == symbol and np.allclose(atoms.frac[i], frac))

    # At Cl (½, 0, 0), the Na at the origin and the Na at (½, ½, 0) are at right angles.
    assert "90.0°" in pick_report(nacl, atoms, [at("Na", [0, 0, 0]), at("Cl", [0.5, 0, 0]), at("Na", [0.5, 0.5, 0])])
    assert a == pytest.approx(5.64, abs=0.01)


def test_slices_stay_inside_the_cell(example):
    from app.engine.io.crystal_io import read_crystal_file

    encoded = encode(read_crystal_file(example("NaCl"))[0].structure)
    view = scene.DensityView(encoded.density, tuple(encoded.lattice_abc), encoded.structure)
    slices = scene.orthogonal_slices(scene.density_grid(view), view.lattice_abc)
    a = encoded.lattice_abc[0]
    bounds = slices.bounds
    assert bounds[0] >= -1e-6 and bounds[1] <= a + 1e-6


def test_periodic_map_is_drawn_in_its_skewed_cell():
    """Grid point (i, j, k) sits at fractional (i, j, k)/G of the cell and carries voxel (i mod G, …)."""
    from app.ui.scene import DensityView, density_grid, isosurface, lattice_plane_slices

    rng = np.random.default_rng(0)
    density = rng.uniform(0, 1, (6, 6, 6)).astype(np.float32)
    matrix = np.array([[3.0, 0.0, 0.0], [1.2, 4.0, 0.0], [0.5, 0.7, 5.0]])  # triclinic
    offset = np.array([10.0, 0.0, 0.0])
    view = DensityView(density, (3.0, 4.2, 5.1), None, matrix)
    assert view.periodic and view.units == "a.u."
    grid = density_grid(view, offset)
    assert tuple(grid.dimensions) == (7, 7, 7)
    points, values = np.asarray(grid.points), np.asarray(grid.point_data["density"])
    for i, j, k in [(0, 0, 0), (1, 2, 3), (6, 0, 5), (6, 6, 6)]:
        n = i + 7 * j + 49 * k
        assert np.allclose(points[n], np.array([i, j, k]) / 6 @ matrix + offset)
        assert values[n] == density[i % 6, j % 6, k % 6]
    surface = isosurface(grid, 0.5)
    frac = (np.asarray(surface.points) - offset) @ np.linalg.inv(matrix)
    assert frac.min() > -1e-9 and frac.max() < 1 + 1e-9
    for axis, plane in enumerate(lattice_plane_slices(grid)):
        frac = (np.asarray(plane.points) - offset) @ np.linalg.inv(matrix)
        assert np.allclose(frac[:, axis], 0.5)  # the cell's mid-plane, not a Cartesian plane
    assert DensityView(density, (3.0, 3.0, 3.0), None).units == "Z/Å³"


def test_decoded_noise_below_zero_is_not_offered_as_a_level():
    density = np.full((4, 4, 4), -0.1)
    density[0, 0, 0] = 1.0
    assert scene.level_range(density)[0] < 0
    low, high = scene.level_range(density, non_negative=True)
    assert low == pytest.approx(0.02) and high == pytest.approx(0.98)
