"""pyvista meshes for the 3-D viewer: balls, sticks, cell outline, density map (no Qt here).

All lengths are Å in the crystal's Cartesian frame. The density box of the ICSG3D representation
spans [−0.25, 1.25) of the cell along each axis; its voxel centres are at
``app.engine.generation.density.box_fractions()``, so the map is placed with origin ``u₀·a`` and spacing
``1.5·a/32`` per axis.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pyvista as pv

from app.ui.element_style import covalent_radius, element_colour, is_metal

#: Ball radius as a fraction of the covalent radius (ball-and-stick look).
ATOM_SCALE = 0.35
#: Two atoms are bonded when closer than this factor times the sum of their covalent radii.
BOND_TOLERANCE = 1.15
BOND_RADIUS = 0.1
#: Atoms this close (fractional units) to a cell face are also drawn on the opposite face.
FACE_TOLERANCE = 1e-3
CELL_COLOUR = (0.2, 0.2, 0.2)
ISOSURFACE_COLOUR = (0.27, 0.51, 0.71)


@dataclass
class DensityView:
    """A density map placed in space with the atoms to draw over it.

    Attributes
    ----------
    density : numpy.ndarray
        Shape (G, G, G), Z/Å³; array axis c runs along cell axis c.
    lattice_abc : tuple of float
        Cell lengths a, b, c (Å) of the orthogonal cell the map belongs to.
    structure : pymatgen.core.Structure
        Atoms in that cell (conventional cell, or a candidate's segmented atoms).
    """

    density: np.ndarray
    lattice_abc: tuple[float, float, float]
    structure: object


@dataclass
class DisplayAtoms:
    """Atoms as drawn: element symbols and Cartesian positions (Å), shape (n, 3)."""

    symbols: list[str]
    positions: np.ndarray


def display_atoms(structure, repeat: tuple[int, int, int] = (1, 1, 1)) -> DisplayAtoms:
    """Sites of a ``repeat`` supercell, plus the copies of face atoms on the opposite faces.

    Parameters
    ----------
    structure : pymatgen.core.Structure
    repeat : tuple of 3 int
        Cells along a, b, c (1–3 each in the viewer).
    """
    repeat_array = np.asarray(repeat, dtype=np.int64)
    frac = np.mod(structure.frac_coords, 1.0)
    frac[frac > 1.0 - FACE_TOLERANCE] = 0.0  # 0.9999… and 0 are the same position
    symbols0 = [site.specie.symbol if hasattr(site.specie, "symbol") else str(site.specie) for site in structure]
    shifts = np.array(list(itertools.product(*(range(n) for n in repeat_array))), dtype=np.float64)
    points = (frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    symbols = symbols0 * len(shifts)
    for axis in range(3):  # each pass also copies copies, so edges and corners get all their atoms
        on_face = points[:, axis] < FACE_TOLERANCE
        extra = points[on_face].copy()
        extra[:, axis] += repeat_array[axis]
        points = np.vstack([points, extra])
        symbols = symbols + [s for s, face in zip(symbols, on_face) if face]
    return DisplayAtoms(symbols, points @ structure.lattice.matrix)


def bond_pairs(atoms: DisplayAtoms) -> np.ndarray:
    """Index pairs (m, 2) of drawn atoms closer than BOND_TOLERANCE × (r_i + r_j).

    In compounds with non-metals, metal–metal pairs are left out: the large covalent radii of
    e.g. Sr or Cs put next-nearest cations within the cutoff, and those sticks would hide the
    cation–anion bonds (SrTiO3, CsCl). Intermetallics keep their metal–metal bonds.
    """
    from scipy.spatial import cKDTree

    if len(atoms.symbols) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    radii = np.array([covalent_radius(s) for s in atoms.symbols])
    pairs = cKDTree(atoms.positions).query_pairs(BOND_TOLERANCE * 2 * radii.max(), output_type="ndarray")
    if len(pairs) == 0:
        return pairs.reshape(0, 2)
    distance = np.linalg.norm(atoms.positions[pairs[:, 0]] - atoms.positions[pairs[:, 1]], axis=1)
    limit = BOND_TOLERANCE * (radii[pairs[:, 0]] + radii[pairs[:, 1]])
    keep = (distance < limit) & (distance > 0.1)
    metal = np.array([is_metal(s) for s in atoms.symbols])
    if not metal.all():
        keep &= ~(metal[pairs[:, 0]] & metal[pairs[:, 1]])
    return pairs[keep]


def _rgb(symbols: list[str]) -> np.ndarray:
    return (np.array([element_colour(s) for s in symbols]) * 255).astype(np.uint8)


def atoms_mesh(atoms: DisplayAtoms) -> pv.PolyData:
    """Spheres with point array ``rgb`` (uint8)."""
    cloud = pv.PolyData(atoms.positions)
    cloud.point_data["radius"] = np.array([ATOM_SCALE * covalent_radius(s) for s in atoms.symbols])
    cloud.point_data["rgb"] = _rgb(atoms.symbols)
    sphere = pv.Sphere(radius=1.0, theta_resolution=20, phi_resolution=20)
    return cloud.glyph(geom=sphere, scale="radius", orient=False)


def bonds_mesh(atoms: DisplayAtoms, pairs: np.ndarray) -> pv.PolyData | None:
    """Sticks as two halves, each in its atom's colour (cell array ``rgb``); None without bonds."""
    if len(pairs) == 0:
        return None
    start, end = atoms.positions[pairs[:, 0]], atoms.positions[pairs[:, 1]]
    middle = (start + end) / 2
    points = np.vstack([start, middle, end])
    n = len(pairs)
    first = np.column_stack([np.full(n, 2), np.arange(n), np.arange(n) + n])
    second = np.column_stack([np.full(n, 2), np.arange(n) + 2 * n, np.arange(n) + n])
    lines = pv.PolyData(points, lines=np.vstack([first, second]).ravel())
    symbols = np.array(atoms.symbols)
    lines.cell_data["rgb"] = _rgb(list(symbols[pairs[:, 0]]) + list(symbols[pairs[:, 1]]))
    return lines.tube(radius=BOND_RADIUS, n_sides=12)


def cell_outline(lattice_matrix: np.ndarray) -> pv.PolyData:
    """The 12 edges of the cell spanned by the rows of ``lattice_matrix`` (Å)."""
    corners = np.array(list(itertools.product((0, 1), repeat=3)), dtype=np.float64)
    edges = [(i, j) for i in range(8) for j in range(i + 1, 8) if np.abs(corners[i] - corners[j]).sum() == 1]
    return pv.PolyData(corners @ np.asarray(lattice_matrix),
                       lines=np.array([[2, i, j] for i, j in edges]).ravel())


def density_grid(view: DensityView) -> pv.ImageData:
    """The map as point data ``density`` on the voxel centres of the box around the cell."""
    from app.engine.generation.density import BOX_MARGIN, box_fractions

    grid_size = view.density.shape[0]
    abc = np.asarray(view.lattice_abc, dtype=np.float64)
    first = box_fractions(grid_size)[0]
    grid = pv.ImageData(dimensions=view.density.shape, spacing=tuple(abc * (1.0 + 2 * BOX_MARGIN) / grid_size),
                        origin=tuple(first * abc))
    # VTK stores x fastest; array axis 0 is x, so Fortran order.
    grid.point_data["density"] = np.asarray(view.density, dtype=np.float32).ravel(order="F")
    return grid


def level_range(density: np.ndarray) -> tuple[float, float]:
    """Isosurface levels (Z/Å³) worth offering: inside the map's range, 2 % away from each end.

    The Gaussians of eq. 1 use ionic radii, so maps of dense ionic crystals never drop near zero
    (NaCl: 0.54–0.83 Z/Å³); a fraction of the maximum would miss them.
    """
    finite = np.asarray(density, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 0.0
    low, high = float(finite.min()), float(finite.max())
    margin = 0.02 * (high - low)
    return low + margin, high - margin


def level_at(fraction: float, low: float, high: float) -> float:
    """Level at ``fraction`` (0–1) of the way from ``low`` to ``high``."""
    return float(low + (high - low) * min(max(fraction, 0.0), 1.0))


def isosurface(grid: pv.ImageData, level: float) -> pv.PolyData | None:
    """Surface where the density equals ``level``; None if empty."""
    surface = grid.contour(isosurfaces=[level], scalars="density")
    return surface if surface.n_points else None


def orthogonal_slices(grid: pv.ImageData) -> pv.MultiBlock:
    """Three slices through the box centre, normal to x, y and z."""
    return grid.slice_orthogonal()
