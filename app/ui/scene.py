"""pyvista meshes and drawing for the 3-D view: balls, sticks, polyhedra, cell, axes, density (no Qt).

All lengths are Å in the crystal's Cartesian frame. Two density representations are drawn:

- the cubic (ICSG3D) box spans [−0.25, 1.25) of the cell along each axis; its voxel centres are at
  ``app.engine.generation.density.box_fractions()``, so the map is placed with origin ``u₀·a`` and
  spacing ``1.5·a/32`` per axis (an axis-aligned ``ImageData``);
- the periodic map of any cell (``app.engine.generation.periodic_density``) has voxel ``(i, j, k)``
  at the fractional point ``(i, j, k)/G``; it is drawn as a ``StructuredGrid`` whose points are those
  fractional points times the lattice matrix, closed by repeating the first plane at fraction 1, so
  the isosurface and slices fill the skewed cell.

:func:`draw_structure` is the one drawing routine of the window's viewer and of ``--self-test``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


class _LazyPyVista:
    """``pyvista``, imported on first use: it pulls in VTK and matplotlib (~1 s), which the window
    does not need before it first draws a crystal (start-up time)."""

    def __getattr__(self, name: str):
        import pyvista

        return getattr(pyvista, name)


pv = _LazyPyVista()

from app.ui.element_style import covalent_radius, element_colour, element_radius, is_metal

#: Ball radius as a fraction of the chosen element radius (ball-and-stick look; the user scales it).
ATOM_SCALE = 0.4
#: Two atoms are bonded when closer than this factor times the sum of their covalent radii
#: (one cutoff per element pair).
BOND_TOLERANCE = 1.15
BOND_RADIUS = 0.1
#: Atoms this close (fractional units) to a cell face are also drawn on the opposite face.
FACE_TOLERANCE = 1e-3
CELL_COLOUR = (0.2, 0.2, 0.2)
DENSITY_CMAP = "viridis"
DENSITY_OPACITY = 0.35
#: Polyhedra are drawn around cations with at least this many anion neighbours.
MIN_POLYHEDRON_VERTICES = 4
#: Shading of balls and sticks: a soft specular highlight as in VESTA. Their meshes carry point
#: normals, so no smoothing filter runs; the actors get Phong interpolation (see ``_shade``).
MATERIAL = {"specular": 0.45, "specular_power": 25.0, "ambient": 0.15, "diffuse": 0.85}


#: Units of the two representations' maps (colour bar, level label).
CUBIC_UNITS = "Z/Å³"
PERIODIC_UNITS = "a.u."


@dataclass
class DensityView:
    """A density map placed in space with the atoms to draw over it.

    Attributes
    ----------
    density : numpy.ndarray
        Shape (G, G, G); array axis c runs along cell axis c. Cubic maps: Z/Å³; periodic maps:
        a sum of unit Gaussians (dimensionless).
    lattice_abc : tuple of float
        Cell lengths a, b, c (Å) of the cell the map belongs to.
    structure : pymatgen.core.Structure
        Atoms in that cell (conventional cubic or standard periodic cell, or a candidate's
        segmented atoms).
    lattice_matrix : numpy.ndarray or None
        Periodic maps only: shape (3, 3), rows a, b, c (Å) of the cell whose fractional grid the
        map samples (``None``: the cubic box representation).
    decoded : bool
        True for a candidate's map as the generator decoded it (noisy, lower and wider peaks);
        False for a map computed from atoms.
    """

    density: np.ndarray
    lattice_abc: tuple[float, float, float]
    structure: object
    lattice_matrix: np.ndarray | None = None
    decoded: bool = False

    @property
    def periodic(self) -> bool:
        """True for a map on the cell's own fractional grid (any crystal system)."""
        return self.lattice_matrix is not None

    @property
    def units(self) -> str:
        return PERIODIC_UNITS if self.periodic else CUBIC_UNITS

    @property
    def cell_matrix(self) -> np.ndarray:
        """Rows a, b, c (Å) of the map's cell."""
        return np.asarray(self.lattice_matrix, dtype=np.float64) if self.periodic else np.diag(self.lattice_abc)


def candidate_density_view(record) -> DensityView | None:
    """The decoded map a candidate record carries, with its segmented structure (None otherwise).

    Maps of the periodic generator (``periodic_density.GRID`` voxels per axis) sample the
    decoded cell's fractional grid; the segmented structure is in that same cell.
    """
    from app.engine.generation import periodic_density

    structure = record.get_structure() if getattr(record, "is_candidate", False) else None
    if structure is None or record.density is None:
        return None
    density = np.asarray(record.density, dtype=np.float32)
    periodic = density.shape[0] == periodic_density.GRID
    return DensityView(density, tuple(structure.lattice.abc), structure,
                       np.array(structure.lattice.matrix) if periodic else None, decoded=True)


@dataclass
class DisplayAtoms:
    """Atoms as drawn.

    Attributes
    ----------
    symbols : list of str
    positions : numpy.ndarray
        Cartesian positions (Å), shape (n, 3).
    site_indices : numpy.ndarray
        Shape (n,), index of the structure site each drawn atom is an image of.
    frac : numpy.ndarray
        Shape (n, 3), fractional coordinates as drawn (images lie outside [0, 1)).
    """

    symbols: list[str]
    positions: np.ndarray
    site_indices: np.ndarray
    frac: np.ndarray


def _symbol(site) -> str:
    return site.specie.symbol if hasattr(site.specie, "symbol") else str(site.specie)


def display_atoms(structure, repeat: tuple[int, int, int] = (1, 1, 1)) -> DisplayAtoms:
    """Sites of a ``repeat`` supercell, plus their images on the far faces, edges and corners (as VESTA).

    Parameters
    ----------
    structure : pymatgen.core.Structure
    repeat : tuple of 3 int
        Cells along a, b, c (1–3 each in the viewer).
    """
    repeat_array = np.asarray(repeat, dtype=np.int64)
    frac = np.mod(structure.frac_coords, 1.0)
    frac[frac > 1.0 - FACE_TOLERANCE] = 0.0  # 0.9999… and 0 are the same position
    symbols0 = [_symbol(site) for site in structure]
    shifts = np.array(list(itertools.product(*(range(n) for n in repeat_array))), dtype=np.float64)
    points = (frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    sites = np.tile(np.arange(len(structure)), len(shifts))
    for axis in range(3):  # each pass also copies copies, so edges and corners get all their atoms
        on_face = points[:, axis] < FACE_TOLERANCE
        extra = points[on_face].copy()
        extra[:, axis] += repeat_array[axis]
        points = np.vstack([points, extra])
        sites = np.concatenate([sites, sites[on_face]])
    symbols = [symbols0[i] for i in sites]
    return DisplayAtoms(symbols, points @ structure.lattice.matrix, sites, points)


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


def _rgb(symbols: list[str], scheme: str = "VESTA") -> np.ndarray:
    return (np.array([element_colour(s, scheme) for s in symbols]) * 255).astype(np.uint8)


def atom_radii(symbols: list[str], radius_kind: str = "atomic", scale: float = 1.0) -> np.ndarray:
    """Drawn ball radii (Å): ATOM_SCALE × ``scale`` × the element's ``radius_kind`` radius."""
    return np.array([ATOM_SCALE * scale * element_radius(s, radius_kind) for s in symbols])


#: Sphere tessellation (theta × phi) by the number of balls: fewer triangles for big cells, whose
#: balls are small on screen anyway; a software (llvmpipe) frame costs about its triangle count.
SPHERE_RESOLUTIONS = ((40, 24), (120, 16), (400, 12))
SPHERE_RESOLUTION_MIN = 10
BOND_SIDES = 10


def sphere_resolution(n_atoms: int) -> int:
    """Tessellation (theta and phi steps) of each ball for a cell of ``n_atoms`` drawn atoms."""
    for limit, resolution in SPHERE_RESOLUTIONS:
        if n_atoms <= limit:
            return resolution
    return SPHERE_RESOLUTION_MIN


@lru_cache(maxsize=8)
def _unit_sphere(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (k, 3) on the unit sphere (also its normals) and triangles (t, 3) of one ball."""
    sphere = pv.Sphere(radius=1.0, theta_resolution=resolution, phi_resolution=resolution)
    points = np.asarray(sphere.points, dtype=np.float64)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points, sphere.faces.reshape(-1, 4)[:, 1:].astype(np.int64)


def _triangles(faces: np.ndarray) -> np.ndarray:
    """VTK's flat face array (3, i, j, k, 3, …) of triangles (t, 3)."""
    return np.column_stack([np.full(len(faces), 3, dtype=np.int64), faces]).ravel()


def atoms_mesh(atoms: DisplayAtoms, radius_kind: str = "atomic", scale: float = 1.0,
               scheme: str = "VESTA") -> pv.PolyData:
    """Spheres with point arrays ``rgb`` (uint8) and ``atom`` (index into ``atoms``, for picking).

    Built with numpy from one cached unit sphere (a VTK glyph filter and a normals filter cost
    ~10× more); the point normals come with it, so the balls are smooth-shaded without a filter.
    """
    unit, triangles = _unit_sphere(sphere_resolution(len(atoms.symbols)))
    radii = atom_radii(atoms.symbols, radius_kind, scale)
    n, k = len(atoms.symbols), len(unit)
    points = (atoms.positions[:, None, :] + radii[:, None, None] * unit[None]).reshape(-1, 3)
    faces = (triangles[None] + (np.arange(n) * k)[:, None, None]).reshape(-1, 3)
    mesh = pv.PolyData(points, faces=_triangles(faces))
    mesh.point_data["rgb"] = np.repeat(_rgb(atoms.symbols, scheme), k, axis=0)
    mesh.point_data["atom"] = np.repeat(np.arange(n, dtype=np.int32), k)
    mesh.point_data.active_normals = np.tile(unit, (n, 1))
    return mesh


def _cylinders(start: np.ndarray, end: np.ndarray, radius: float, sides: int) -> tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray]:
    """Open cylinders from ``start`` to ``end`` (m, 3): points (2·sides·m, 3), normals, triangles."""
    axis = end - start
    length = np.linalg.norm(axis, axis=1, keepdims=True)
    w = axis / np.maximum(length, 1e-12)
    helper = np.where(np.abs(w[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    u = np.cross(w, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(w, u)
    angles = np.linspace(0.0, 2 * np.pi, sides, endpoint=False)
    ring = np.cos(angles)[None, :, None] * u[:, None, :] + np.sin(angles)[None, :, None] * v[:, None, :]
    normals = np.concatenate([ring, ring], axis=1)  # (m, 2·sides, 3): bottom ring, then top ring
    points = np.concatenate([start[:, None, :] + radius * ring, end[:, None, :] + radius * ring], axis=1)
    i = np.arange(sides)
    j = (i + 1) % sides
    quad = np.concatenate([np.column_stack([i, j, sides + j]), np.column_stack([i, sides + j, sides + i])])
    triangles = (quad[None] + (np.arange(len(start)) * 2 * sides)[:, None, None]).reshape(-1, 3)
    return points.reshape(-1, 3), normals.reshape(-1, 3), triangles


def bonds_mesh(atoms: DisplayAtoms, pairs: np.ndarray, scheme: str = "VESTA",
               radii: np.ndarray | None = None) -> pv.PolyData | None:
    """Sticks as two halves, each in its atom's colour (point array ``rgb``); None without bonds.

    ``radii`` (Å, one per drawn atom): each half then starts just inside its ball's surface instead
    of at its centre, so the hidden part inside the ball is not drawn (a software frame's cost
    grows with the pixels drawn, hidden or not).
    """
    if len(pairs) == 0:
        return None
    start, end = atoms.positions[pairs[:, 0]], atoms.positions[pairs[:, 1]]
    middle = (start + end) / 2
    if radii is not None:
        direction = end - start
        length = np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
        direction = direction / length
        # Stop inside the ball where the stick's rim meets it: sqrt(r² - R²), less a small overlap.
        inset = np.sqrt(np.maximum(radii ** 2 - BOND_RADIUS ** 2, 0.0)) * 0.9
        half = length[:, 0] / 2
        start = start + direction * np.minimum(inset[pairs[:, 0]], half)[:, None]
        end = end - direction * np.minimum(inset[pairs[:, 1]], half)[:, None]
    points, normals, triangles = _cylinders(np.vstack([start, end]), np.vstack([middle, middle]), BOND_RADIUS,
                                            BOND_SIDES)
    mesh = pv.PolyData(points, faces=_triangles(triangles))
    symbols = np.array(atoms.symbols)
    colours = _rgb(list(symbols[pairs[:, 0]]) + list(symbols[pairs[:, 1]]), scheme)
    mesh.point_data["rgb"] = np.repeat(colours, 2 * BOND_SIDES, axis=0)
    mesh.point_data.active_normals = normals
    return mesh


def polyhedra_mesh(atoms: DisplayAtoms, pairs: np.ndarray, scheme: str = "VESTA") -> pv.PolyData | None:
    """Coordination polyhedra (convex hulls of bonded anions) around cations, in the cation's colour."""
    from scipy.spatial import ConvexHull, QhullError

    neighbours: dict[int, list[int]] = {}
    for i, j in pairs:
        neighbours.setdefault(int(i), []).append(int(j))
        neighbours.setdefault(int(j), []).append(int(i))
    points, faces, colours = [], [], []
    offset = 0
    for centre, around in neighbours.items():
        if not is_metal(atoms.symbols[centre]):
            continue
        anions = [k for k in around if not is_metal(atoms.symbols[k])]
        if len(anions) < MIN_POLYHEDRON_VERTICES:
            continue
        vertices = atoms.positions[anions]
        try:
            hull = ConvexHull(vertices)
        except QhullError:  # flat arrangements have no volume
            continue
        points.append(vertices)
        faces.extend(np.column_stack([np.full(len(hull.simplices), 3), hull.simplices + offset]))
        colours.extend([element_colour(atoms.symbols[centre], scheme)] * len(hull.simplices))
        offset += len(vertices)
    if not points:
        return None
    mesh = pv.PolyData(np.vstack(points), faces=np.asarray(faces).ravel())
    mesh.cell_data["rgb"] = (np.array(colours) * 255).astype(np.uint8)
    return mesh


def cell_outline(lattice_matrix: np.ndarray) -> pv.PolyData:
    """The 12 edges of the cell spanned by the rows of ``lattice_matrix`` (Å)."""
    corners = np.array(list(itertools.product((0, 1), repeat=3)), dtype=np.float64)
    edges = [(i, j) for i in range(8) for j in range(i + 1, 8) if np.abs(corners[i] - corners[j]).sum() == 1]
    return pv.PolyData(corners @ np.asarray(lattice_matrix),
                       lines=np.array([[2, i, j] for i, j in edges]).ravel())


@dataclass
class StructureStyle:
    """What :func:`draw_structure` draws and how."""

    radius_kind: str = "atomic"
    scale: float = 1.0
    scheme: str = "VESTA"
    bonds: bool = True
    cell: bool = True
    polyhedra: bool = False
    repeat: tuple[int, int, int] = (1, 1, 1)


def _shade(actor) -> None:
    """Smooth (per-pixel) shading from the mesh's own point normals."""
    actor.prop.interpolation = "phong"


def draw_structure(plotter, structure, style: StructureStyle | None = None) -> DisplayAtoms:
    """Add atoms, bonds, polyhedra and the cell of ``structure`` to a pyvista plotter (no render).

    Returns
    -------
    DisplayAtoms
        The atoms drawn (actor ``atoms`` has their index as point array ``atom``).
    """
    style = style or StructureStyle()
    atoms = display_atoms(structure, style.repeat)
    _shade(plotter.add_mesh(atoms_mesh(atoms, style.radius_kind, style.scale, style.scheme), scalars="rgb",
                            rgb=True, render=False, name="atoms", **MATERIAL))
    pairs = bond_pairs(atoms) if (style.bonds or style.polyhedra) else None
    if style.bonds:
        bonds = bonds_mesh(atoms, pairs, style.scheme, atom_radii(atoms.symbols, style.radius_kind, style.scale))
        if bonds is not None:
            _shade(plotter.add_mesh(bonds, scalars="rgb", rgb=True, render=False, name="bonds", pickable=False,
                                    **MATERIAL))
    if style.polyhedra:
        polyhedra = polyhedra_mesh(atoms, pairs, style.scheme)
        if polyhedra is not None:
            plotter.add_mesh(polyhedra, scalars="rgb", rgb=True, opacity=0.45, render=False, name="polyhedra",
                             pickable=False, show_edges=True, edge_color=(0.3, 0.3, 0.3))
    if style.cell:
        plotter.add_mesh(cell_outline(structure.lattice.matrix), color=CELL_COLOUR, line_width=2, render=False,
                         name="cell", pickable=False)
    return atoms


def add_lattice_axes(plotter, lattice_matrix: np.ndarray):
    """An a, b, c triad in the lower-left corner, its arrows along the cell vectors."""
    from vtkmodules.vtkCommonMath import vtkMatrix4x4  # not ``import vtk``: that loads every VTK module

    axes = plotter.add_axes(xlabel="a", ylabel="b", zlabel="c", line_width=2, color="black")
    try:
        actor = plotter.renderer.axes_actor
        directions = np.asarray(lattice_matrix, dtype=np.float64)
        directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
        matrix = vtkMatrix4x4()
        for row in range(3):
            for column in range(3):
                matrix.SetElement(row, column, directions[column, row])  # columns are a, b, c
        actor.SetUserMatrix(matrix)
    except AttributeError:  # an older pyvista: the plain x, y, z triad stays
        pass
    return axes


def element_legend(symbols: list[str], scheme: str = "VESTA") -> list[tuple[str, tuple[float, float, float]]]:
    """(symbol, colour) of each element present, in order of atomic number."""
    from pymatgen.core import Element

    def atomic_number(symbol: str) -> int:
        try:
            return Element(symbol).Z
        except ValueError:
            return 999

    return [(s, element_colour(s, scheme)) for s in sorted(set(symbols), key=atomic_number)]


def density_grid(view: DensityView, offset: np.ndarray | None = None):
    """The map as point data ``density`` placed in the crystal's frame.

    Cubic maps: an ``ImageData`` on the voxel centres of the box around the cell. Periodic maps:
    a ``StructuredGrid`` over the cell (see the module docstring). ``offset`` (Å, shape (3,))
    moves it, e.g. to show a decoded map beside its structure.
    """
    if view.periodic:
        return periodic_density_grid(view.density, view.lattice_matrix, offset)
    from app.engine.generation.density import BOX_MARGIN, box_fractions

    grid_size = view.density.shape[0]
    abc = np.asarray(view.lattice_abc, dtype=np.float64)
    first = box_fractions(grid_size)[0]
    origin = first * abc + (np.zeros(3) if offset is None else np.asarray(offset, dtype=np.float64))
    grid = pv.ImageData(dimensions=view.density.shape, spacing=tuple(abc * (1.0 + 2 * BOX_MARGIN) / grid_size),
                        origin=tuple(origin))
    # VTK stores x fastest; array axis 0 is x, so Fortran order.
    grid.point_data["density"] = np.asarray(view.density, dtype=np.float32).ravel(order="F")
    return grid


def periodic_density_grid(density: np.ndarray, lattice_matrix: np.ndarray, offset: np.ndarray | None = None):
    """A periodic fractional-grid map drawn in its (possibly skewed) cell.

    Parameters
    ----------
    density : numpy.ndarray
        Shape (G, G, G): voxel (i, j, k) at fractional (i, j, k)/G.
    lattice_matrix : numpy.ndarray
        Shape (3, 3), rows a, b, c (Å).
    offset : numpy.ndarray, optional
        Where the cell's origin goes (Å).

    Returns
    -------
    pyvista.StructuredGrid
        (G + 1)³ points spanning the whole cell (the first plane repeated at fraction 1, as the
        map is periodic), point data ``density``.
    """
    closed = np.pad(np.asarray(density, dtype=np.float32), [(0, 1)] * 3, mode="wrap")
    sizes = closed.shape
    fractions = [np.arange(n, dtype=np.float64) / (n - 1) for n in sizes]
    frac = np.stack(np.meshgrid(*fractions, indexing="ij"), axis=-1)  # (G+1, G+1, G+1, 3)
    points = frac @ np.asarray(lattice_matrix, dtype=np.float64)
    if offset is not None:
        points = points + np.asarray(offset, dtype=np.float64)
    grid = pv.StructuredGrid(points[..., 0], points[..., 1], points[..., 2])
    # StructuredGrid points run with the first array axis fastest (Fortran order), as in ImageData.
    grid.point_data["density"] = closed.ravel(order="F")
    return grid


def level_range(density: np.ndarray, non_negative: bool = False) -> tuple[float, float]:
    """Isosurface levels worth offering: inside the map's range, 2 % away from each end.

    The Gaussians of eq. 1 use ionic radii, so maps of dense ionic crystals never drop near zero
    (NaCl: 0.54–0.83 Z/Å³); a fraction of the maximum would miss them. ``non_negative``: the range
    starts at 0 at the lowest (periodic maps are sums of Gaussians; the small negative values of
    decoded maps are decoder noise, and a level among them draws the noise).
    """
    finite = np.asarray(density, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 0.0
    low, high = float(finite.min()), float(finite.max())
    if non_negative:
        low = min(max(low, 0.0), high)
    margin = 0.02 * (high - low)
    return low + margin, high - margin


def level_at(fraction: float, low: float, high: float) -> float:
    """Level at ``fraction`` (0–1) of the way from ``low`` to ``high``."""
    return float(low + (high - low) * min(max(fraction, 0.0), 1.0))


def isosurface(grid: pv.ImageData, level: float) -> pv.PolyData | None:
    """Surface where the density equals ``level`` (carries point array ``density``); None if empty."""
    surface = grid.contour(isosurfaces=[level], scalars="density")
    return surface if surface.n_points else None


def orthogonal_slices(grid, lattice_abc, offset: np.ndarray | None = None) -> pv.MultiBlock:
    """Three slices through the cell centre, normal to a, b and c, within the cell (not the whole box).

    ``offset`` (Å) is where the cell's origin is (as given to :func:`density_grid`).
    """
    low = np.zeros(3) if offset is None else np.asarray(offset, dtype=np.float64)
    high = low + np.asarray(lattice_abc, dtype=np.float64)
    cell = grid.clip_box((low[0], high[0], low[1], high[1], low[2], high[2]), invert=False)
    centre = (low + high) / 2
    return cell.slice_orthogonal(x=centre[0], y=centre[1], z=centre[2])


def lattice_plane_slices(grid) -> pv.MultiBlock:
    """The three lattice planes through the cell centre (fractions ½ along a, b and c) of a
    :func:`periodic_density_grid`: in a skewed cell they are the cell's own mid-planes, not
    Cartesian planes."""
    sizes = np.asarray(grid.dimensions)
    points = np.asarray(grid.points).reshape(*sizes[::-1], 3).transpose(2, 1, 0, 3)  # (i, j, k, xyz)
    values = np.asarray(grid.point_data["density"]).reshape(*sizes[::-1]).transpose(2, 1, 0)
    blocks = pv.MultiBlock()
    for axis, name in enumerate("abc"):
        index = [slice(None)] * 3
        index[axis] = slice(sizes[axis] // 2, sizes[axis] // 2 + 1)
        plane, plane_values = points[tuple(index)], values[tuple(index)]
        mesh = pv.StructuredGrid(plane[..., 0], plane[..., 1], plane[..., 2])
        mesh.point_data["density"] = plane_values.ravel(order="F")
        blocks[f"normal to {name}"] = mesh
    return blocks
