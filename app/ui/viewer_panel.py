"""3-D viewer: crystal (VESTA colours, legend, a/b/c triad, polyhedra), picking, density map, image export."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton, QSlider,
                               QSpinBox, QVBoxLayout, QWidget)

from app.engine.core.errors import CancelledError, CrystalDesignerError, StructureReadError
from app.ui import scene
from app.ui.element_style import RADIUS_KINDS
from app.ui.records import CrystalRecord

logger = logging.getLogger(__name__)

#: Shown (with the engine's reason as tooltip) for crystals neither density representation holds.
NO_MAP_NOTE = "no density map: only ordered crystals of ≤ 20 primitive sites (cubic: ≤ 40 sites)"
DensityProvider = Callable[[CrystalRecord], Awaitable[scene.DensityView]]
_LEVEL_STEPS = 100
#: Initial isosurface level, as a fraction of the map's range. Low enough that the surface
#: encloses the balls (a level near the maximum gives shells hidden inside them).
DEFAULT_LEVEL = 0.3
#: The same for periodic maps (unit Gaussians of σ = 0.4 Å): at 0.08 of the range a surface of
#: ~0.9 Å radius around each atom, outside the balls of all but the largest atoms, still apart.
DEFAULT_LEVEL_PERIODIC = 0.08
#: The same for periodic maps decoded by the generator (a candidate's map): lower, wider peaks and
#: decoder noise, so 0.08 merges the atoms and draws noise blobs. 0.33 gave the most maps with one
#: blob per segmented atom (47 % of 139 maps; 0.28–0.38 within 2 points; 0.08: 4 %), measured by
#: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decoded_isosurface_level.py --n 100``
#: (around SrTiO3 and rutile; with --n 300 the best was 0.31, 0.33 one point below it).
DEFAULT_LEVEL_DECODED = 0.33
#: Direction from the crystal towards the camera when a structure is first shown.
VIEW_DIRECTION = (2.2, 1.0, 0.7)
#: Gap (Å) between a candidate's structure and its decoded map when shown side by side.
SIDE_BY_SIDE_GAP = 1.0
#: Cartesian axis along which the decoded map is moved beside the structure (1: y).
SIDE_BY_SIDE_AXIS = 1


def default_level(view: scene.DensityView) -> float:
    """Initial isosurface level of ``view``, as a fraction of its ``scene.level_range``. Maps with
    the same default are one kind for the level reset (decoded cubic maps share the cubic one:
    only periodic decoded maps were measured)."""
    if not view.periodic:
        return DEFAULT_LEVEL
    return DEFAULT_LEVEL_DECODED if view.decoded else DEFAULT_LEVEL_PERIODIC


def _describe_site(structure, atoms: scene.DisplayAtoms, index: int) -> str:
    site = atoms.site_indices[index]
    label = getattr(structure[int(site)], "label", None) or f"{atoms.symbols[index]}{site + 1}"
    frac = atoms.frac[index]
    cart = atoms.positions[index]
    return (f"{atoms.symbols[index]} (site {label}, #{site + 1}): frac ({frac[0]:.4f}, {frac[1]:.4f}, {frac[2]:.4f}), "
            f"Cartesian ({cart[0]:.3f}, {cart[1]:.3f}, {cart[2]:.3f}) Å")


def shortest_image_vector(lattice, frac_from: np.ndarray, frac_to: np.ndarray) -> np.ndarray:
    """Cartesian vector (Å) from one point to the nearest periodic image of another."""
    delta = np.asarray(frac_to, dtype=np.float64) - np.asarray(frac_from, dtype=np.float64)
    delta -= np.round(delta)
    best = None
    for shift in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1])).T.reshape(-1, 3):
        vector = (delta + shift) @ lattice.matrix
        if best is None or np.linalg.norm(vector) < np.linalg.norm(best):
            best = vector
    return best


def pick_report(structure, atoms: scene.DisplayAtoms, picked: list[int]) -> str:
    """Status text for 1–3 picked atoms: the site; the shortest-image distance; the angle at the 2nd atom."""
    if len(picked) == 1:
        return _describe_site(structure, atoms, picked[0])
    names = " – ".join(f"{atoms.symbols[i]}{atoms.site_indices[i] + 1}" for i in picked)
    if len(picked) == 2:
        vector = shortest_image_vector(structure.lattice, atoms.frac[picked[0]], atoms.frac[picked[1]])
        distance = float(np.linalg.norm(vector))
        drawn = float(np.linalg.norm(atoms.positions[picked[1]] - atoms.positions[picked[0]]))
        text = f"distance {names}: {distance:.2f} Å (shortest periodic image)"
        return text + (f"; {drawn:.2f} Å as drawn" if abs(drawn - distance) > 5e-3 else "")
    # The angle between the images the user picked, as drawn (shortest images of two copies of one
    # site would coincide and give 0°).
    first = atoms.positions[picked[0]] - atoms.positions[picked[1]]
    second = atoms.positions[picked[2]] - atoms.positions[picked[1]]
    cosine = float(np.dot(first, second) / max(np.linalg.norm(first) * np.linalg.norm(second), 1e-12))
    return f"angle {names}: {np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))):.1f}° (as drawn)"


class ViewerPanel(QWidget):
    """Shows one record; asks ``density_provider`` for its map when density display is on.

    Parameters
    ----------
    density_provider : callable
        ``await density_provider(record)`` → :class:`~app.ui.scene.DensityView`; raises
        ``StructureReadError`` for structures without a map (disordered, too many sites).

    Signals
    -------
    pick_message(str)
        What the picked atoms are: site and coordinates, distance or angle (for the status bar).
    """

    pick_message = Signal(str)

    def __init__(self, density_provider: DensityProvider, parent=None) -> None:
        super().__init__(parent)
        self._density_provider = density_provider
        self._record: CrystalRecord | None = None
        self._density: scene.DensityView | None = None
        self._density_grid = None
        self._iso_actor = None
        self._density_task: asyncio.Future | None = None
        self._density_request = 0
        self._atoms: scene.DisplayAtoms | None = None
        self._drawn_structure = None
        #: (structure drawn, StructureStyle) of the atom/bond/cell actors now in the scene.
        self._structure_key: tuple | None = None
        self._picked: list[int] = []
        self.legend_symbols: list[str] = []

        # The VTK view is made on first use (or just after the window is first shown): importing
        # pyvista/VTK takes about a second, and the window should appear before that.
        self._plotter = None
        self._closed = False
        self._view_holder = QLabel("Loading the 3-D view…")
        self._view_holder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._view_holder.setMinimumSize(200, 150)
        self.title = QLabel("Select a structure to view it.")
        self.note = QLabel("")
        self.note.setStyleSheet("color: #a05a00;")
        self.note.setWordWrap(True)
        self.legend = QLabel("")
        self.legend.setToolTip("Element colours (VESTA)")
        self.pick_label = QLabel("Click an atom: site; two: distance; three: angle.")
        self.pick_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._build_controls()
        self._update_level_controls()

    @property
    def plotter(self):
        """The pyvistaqt ``QtInteractor`` of the view (created on first access)."""
        if self._plotter is None:
            self._create_plotter()
        return self._plotter

    @property
    def has_plotter(self) -> bool:
        """True once the VTK view exists (it is made lazily)."""
        return self._plotter is not None

    def _create_plotter(self) -> None:
        from pyvistaqt import QtInteractor

        # No auto-update timer: it re-renders 5×/s even when nothing changed, and a software
        # (llvmpipe) render takes 100–200 ms on a busy CPU. Every change here calls render().
        plotter = QtInteractor(self, auto_update=False)
        plotter.set_background("white")
        # 4× multisampling quadruples the cost of a software (llvmpipe) frame; exported images get it back
        # by rendering at twice the size.
        plotter.ren_win.SetMultiSamples(0)
        self._plotter = plotter
        self.layout().replaceWidget(self._view_holder, plotter.interactor)
        self._view_holder.hide()
        self._view_holder.deleteLater()
        self._install_picking()

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if self._plotter is None:
            # After the window's first frame: make the 3-D view while the worker loads its models.
            QTimer.singleShot(200, self._create_plotter_if_open)

    def _create_plotter_if_open(self) -> None:
        if self._plotter is None and not self._closed:
            self._create_plotter()
            self._redraw(reset_camera=True)

    def _build_controls(self) -> None:
        self.supercell = [self._repeat_box(axis) for axis in "abc"]
        self.show_bonds = self._check("Bonds", True, self._redraw)
        self.show_cell = self._check("Cell", True, self._redraw)
        self.show_polyhedra = self._check("Polyhedra", False, self._redraw, "Coordination polyhedra of the cations")
        self.show_density = self._check("Density", True, self._on_density_toggled)
        self.show_slices = self._check("Slices", False, self._redraw)
        self.side_by_side = self._check("Map beside", True, lambda: self._redraw(reset_camera=True),
                                        "Show a candidate's decoded map beside its segmented structure")
        self.orthographic = self._check("Orthographic", False, self._apply_projection)
        # Relaxed candidates: the relaxed crystal by default; this shows the decoded (unrelaxed) cell.
        self.show_unrelaxed = self._check("Unrelaxed", False, self._on_unrelaxed_toggled,
                                          "Show the decoded cell before CHGNet relaxation instead of the relaxed one")
        self.show_unrelaxed.setEnabled(False)
        self.radius_kind = QComboBox()
        self.radius_kind.addItems([f"{kind} radius" for kind in RADIUS_KINDS])
        self.radius_kind.currentIndexChanged.connect(lambda _i: self._redraw())
        self.atom_scale = QDoubleSpinBox()
        self.atom_scale.setRange(0.1, 2.0)
        self.atom_scale.setSingleStep(0.1)
        self.atom_scale.setValue(1.0)
        self.atom_scale.setToolTip("Ball size, × the chosen radius × 0.4")
        self.atom_scale.valueChanged.connect(lambda _v: self._redraw())
        self.level = QSlider(Qt.Orientation.Horizontal)
        self.level.setRange(0, _LEVEL_STEPS)
        self.level.setValue(round(DEFAULT_LEVEL * _LEVEL_STEPS))
        self.level.setToolTip("Isosurface level, from the map's minimum to its maximum")
        # Dragging emits many values per frame; one isosurface per event-loop pass is enough.
        self._level_timer = QTimer(self)
        self._level_timer.setSingleShot(True)
        self._level_timer.setInterval(0)
        self._level_timer.timeout.connect(self._update_isosurface)
        self.level.valueChanged.connect(lambda _value: self._on_level_changed())
        self.level_label = QLabel("")
        self.level_label.setMinimumWidth(90)
        self.view_buttons = {key: self._button(text, lambda _c=False, k=key: self.view_along(k))
                             for key, text in (("a", "along a"), ("b", "along b"), ("c", "along c"),
                                               ("reset", "Reset view"))}
        self._lay_out()

    def _lay_out(self) -> None:
        structure_row = QHBoxLayout()
        structure_row.addWidget(QLabel("Supercell"))
        for box in self.supercell:
            structure_row.addWidget(box)
        for widget in (self.radius_kind, QLabel("×"), self.atom_scale, self.show_bonds, self.show_polyhedra,
                       self.show_cell):
            structure_row.addWidget(widget)
        structure_row.addStretch(1)
        view_row = QHBoxLayout()
        for widget in (*self.view_buttons.values(), self.orthographic, self.show_unrelaxed):
            view_row.addWidget(widget)
        view_row.addStretch(1)
        level_row = QHBoxLayout()
        for widget in (self.show_density, self.show_slices, self.side_by_side, QLabel("Level")):
            level_row.addWidget(widget)
        level_row.addWidget(self.level, 1)
        level_row.addWidget(self.level_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(self.legend)
        layout.addLayout(header)
        layout.addWidget(self._view_holder, 1)
        layout.addWidget(self.pick_label)
        for row in (structure_row, view_row, level_row):
            layout.addLayout(row)
        layout.addWidget(self.note)

    def _repeat_box(self, axis: str) -> QSpinBox:
        box = QSpinBox()
        box.setRange(1, 3)
        box.setToolTip(f"Cells along {axis}")
        box.valueChanged.connect(lambda _value: self._redraw(reset_camera=True))
        return box

    def _check(self, text: str, checked: bool, slot, tip: str = "") -> QCheckBox:
        box = QCheckBox(text)
        box.setChecked(checked)
        box.setToolTip(tip)
        box.toggled.connect(lambda _checked: slot())
        return box

    def _button(self, text: str, slot) -> QPushButton:
        button = QPushButton(text)
        button.clicked.connect(slot)
        return button

    # -- public ------------------------------------------------------------------------------

    @property
    def record(self) -> CrystalRecord | None:
        return self._record

    @property
    def density_view(self) -> scene.DensityView | None:
        """The density map currently shown (None if none)."""
        return self._density

    @property
    def displayed_atoms(self) -> scene.DisplayAtoms | None:
        """The atoms drawn now (indices are what :meth:`pick_atom` takes)."""
        return self._atoms

    def show_record(self, record: CrystalRecord | None) -> None:
        """Draw ``record`` (or nothing), then fetch its density map if wanted."""
        if record is self._record and record is not None:
            return
        self._record = record
        self._density = None
        self._set_density(scene.candidate_density_view(record) if record is not None else None)
        self._cancel_density_task()
        self.note.setText("")
        self._update_title()
        self._update_relaxed_toggle()
        self._update_level_controls()
        self._redraw(reset_camera=True)
        self._request_density()

    def _update_relaxed_toggle(self) -> None:
        record = self._record
        relaxed = record is not None and record.get_relaxed_structure() is not None
        self.show_unrelaxed.blockSignals(True)
        self.show_unrelaxed.setChecked(bool(relaxed and record.show_unrelaxed))
        self.show_unrelaxed.blockSignals(False)
        self.show_unrelaxed.setEnabled(relaxed)
        self.show_unrelaxed.setToolTip(
            "Show the decoded cell before CHGNet relaxation instead of the relaxed one" if relaxed
            else "Only relaxed candidates have an unrelaxed form")

    def _on_unrelaxed_toggled(self) -> None:
        record = self._record
        if record is None or record.get_relaxed_structure() is None:
            return
        record.show_unrelaxed = self.show_unrelaxed.isChecked()
        self._update_title()
        self._redraw(reset_camera=True)

    def _update_title(self) -> None:
        record = self._record
        if record is None:
            self.title.setText("Select a structure to view it.")
            return
        label = f"{record.name} — {record.formula or '?'}"
        if record.get_relaxed_structure() is not None:
            label += "  (unrelaxed)" if record.show_unrelaxed else "  (relaxed)"
            group = None if record.show_unrelaxed else record.stability.get("relaxed_space_group")
            label += f"  [{group or record.space_group}]" if (group or record.space_group) else ""
        elif record.space_group:
            label += f"  [{record.space_group}]"
        self.title.setText(label)

    async def wait_density(self) -> None:
        """Return once the density map being fetched (if any) is drawn or has failed."""
        task = self._density_task
        if task is not None:
            await asyncio.wait([task])

    def refresh(self, record: CrystalRecord) -> None:
        """Redraw if ``record`` is the one shown (e.g. its structure has just been re-read)."""
        if record is self._record:
            self._update_relaxed_toggle()
            self._update_title()
            self._redraw()
            self._request_density()

    def export_image(self, path: str, size: tuple[int, int] | None = None) -> None:
        """Save the view as a PNG of ``size`` (width, height in pixels; default: as on screen)."""
        if self.legend_symbols:
            self._add_vtk_legend()  # the image carries its own legend
        try:
            self.plotter.screenshot(str(path), window_size=list(size) if size else None, return_img=False)
        finally:
            self.plotter.remove_legend(render=False)
            self.plotter.render()

    def view_along(self, axis: str) -> None:
        """Look down the cell vector ``a``, ``b`` or ``c``; ``reset`` goes back to the first view."""
        structure = self._drawn_structure
        if structure is None:
            return
        renderer = self.plotter.renderer
        if axis == "reset":
            renderer.view_vector(VIEW_DIRECTION, viewup=(0.0, 0.0, 1.0), render=False)
        else:
            matrix = structure.lattice.matrix
            index = "abc".index(axis)
            up = matrix[1] if axis == "c" else matrix[2]
            renderer.view_vector(tuple(matrix[index]), viewup=tuple(up / np.linalg.norm(up)), render=False)
        renderer.ResetCamera()  # pyvista's reset_camera() renders even with render=False
        self.plotter.render()

    def close_plotter(self) -> None:
        """Release the VTK window (call before the widget goes away)."""
        self._cancel_density_task()
        self._closed = True
        if self._plotter is not None:
            self._plotter.close()

    # -- picking -----------------------------------------------------------------------------

    def _install_picking(self) -> None:
        from vtkmodules.vtkRenderingCore import vtkCellPicker  # not ``import vtk`` (every VTK module, ~1 s)

        self._picker = vtkCellPicker()
        self._picker.SetTolerance(0.0005)
        self._press_position = None
        interactor = self.plotter.iren.interactor
        interactor.AddObserver("LeftButtonPressEvent", self._on_press, 1.0)
        interactor.AddObserver("LeftButtonReleaseEvent", self._on_release, 1.0)

    def _on_press(self, interactor, _event) -> None:
        self._press_position = interactor.GetEventPosition()

    def _on_release(self, interactor, _event) -> None:
        position = interactor.GetEventPosition()
        if self._press_position is not None and max(abs(position[0] - self._press_position[0]),
                                                    abs(position[1] - self._press_position[1])) <= 3:
            self.pick_at(*position)  # a click, not a rotation drag
        self._press_position = None

    def pick_at(self, x: int, y: int) -> int | None:
        """Pick the atom under display position (x, y) (VTK pixels, origin bottom left); None if none."""
        actor = self.plotter.renderer.actors.get("atoms")
        if actor is None or self._atoms is None:
            return None
        self._picker.InitializePickList()
        self._picker.AddPickList(actor)
        self._picker.PickFromListOn()
        if not self._picker.Pick(x, y, 0, self.plotter.renderer) or self._picker.GetCellId() < 0:
            self.clear_picks()
            return None
        mesh = actor.mapper.dataset
        point = mesh.get_cell(self._picker.GetCellId()).point_ids[0]
        index = int(mesh.point_data["atom"][point])
        self.pick_atom(index)
        return index

    def pick_atom(self, index: int) -> str:
        """Add drawn atom ``index`` to the picks (a fourth starts over); returns the report."""
        if self._atoms is None or self._drawn_structure is None:
            return ""
        if len(self._picked) >= 3:
            self._picked = []
        self._picked.append(int(index))
        message = pick_report(self._drawn_structure, self._atoms, self._picked)
        self.pick_label.setText(message)
        self.pick_message.emit(message)
        self._mark_picks()
        return message

    def clear_picks(self) -> None:
        self._picked = []
        self.plotter.remove_actor("picks", render=False)
        self.plotter.render()

    def _mark_picks(self) -> None:
        atoms = self._atoms
        radii = scene.atom_radii([atoms.symbols[i] for i in self._picked], self._radius_kind(),
                                 self.atom_scale.value())
        marks = pv_spheres(atoms.positions[self._picked], radii * 1.15)
        self.plotter.add_mesh(marks, color=(1.0, 0.85, 0.0), opacity=0.45, name="picks", pickable=False,
                              render=False)
        self.plotter.render()

    # -- density -----------------------------------------------------------------------------

    def _on_density_toggled(self) -> None:
        self._request_density()
        self._redraw()

    def _request_density(self) -> None:
        record = self._record
        if (record is None or self._density is not None or not self.show_density.isChecked()
                or record.get_structure() is None or self._density_task is not None):
            return
        self.note.setText("computing density map…")
        self._density_request += 1
        self._density_task = asyncio.ensure_future(self._load_density(record, self._density_request))

    async def _load_density(self, record: CrystalRecord, request: int) -> None:
        try:
            view = await self._density_provider(record)
        except StructureReadError as error:
            if record is self._record:
                self.note.setText(NO_MAP_NOTE)
                self.note.setToolTip(str(error))
            return
        except (CancelledError, asyncio.CancelledError):
            return
        except CrystalDesignerError as error:
            if record is self._record:
                self.note.setText(f"density map unavailable: {error}")
            return
        finally:
            # A cancelled earlier request for the same record must not forget the current one.
            if request == self._density_request:
                self._density_task = None
        if record is not self._record:
            return
        self.note.setText("")
        self.note.setToolTip("")
        self._set_density(view)
        self._redraw(reset_camera=True)

    def _set_density(self, view: scene.DensityView | None) -> None:
        """Show ``view``'s map; a map of another kind (cubic, periodic computed from atoms, periodic
        decoded: each has its own :func:`default_level`) resets the level to that default."""
        self._density = view
        self._density_grid = None
        if view is not None and getattr(self, "_level_default", None) != default_level(view):
            self._level_default = default_level(view)
            self.level.blockSignals(True)
            self.level.setValue(round(self._level_default * _LEVEL_STEPS))
            self.level.blockSignals(False)
        self._update_level_controls()

    def _cancel_density_task(self) -> None:
        if self._density_task is not None and not self._density_task.done():
            self._density_task.cancel()
        self._density_task = None

    # -- drawing -----------------------------------------------------------------------------

    def _repeat(self) -> tuple[int, int, int]:
        return tuple(box.value() for box in self.supercell)  # type: ignore[return-value]

    def _radius_kind(self) -> str:
        return RADIUS_KINDS[max(self.radius_kind.currentIndex(), 0)]

    def _map_offset(self) -> np.ndarray:
        """Where the map's cell starts: beside a candidate's structure (along y), else on it."""
        if self._density is None or not (self._record is not None and self._record.is_candidate
                                         and self.side_by_side.isChecked()):
            return np.zeros(3)
        # Along y: from the first view (VIEW_DIRECTION, mostly along x) y runs across the screen, so
        # the map sits to the right of the structure instead of in front of it.
        shift = np.zeros(3)
        shift[SIDE_BY_SIDE_AXIS] = side_by_side_shift(self._density.cell_matrix, self._repeat(), SIDE_BY_SIDE_AXIS)
        return shift

    def _grid(self):
        if self._density is not None and self._density_grid is None:
            self._density_grid = scene.density_grid(self._density, self._map_offset())
        return self._density_grid

    def _update_level_controls(self) -> None:
        has_density = self._density is not None
        self.level.setEnabled(has_density)
        self.show_slices.setEnabled(has_density)
        self.side_by_side.setEnabled(has_density and self._record is not None and self._record.is_candidate)
        self.level_label.setText(f"{self._current_level():.3g} {self._density.units}" if has_density else "")

    def _current_level(self) -> float:
        if self._density is None:
            return 0.0
        low, high = scene.level_range(self._density.density, non_negative=self._density.periodic)
        return scene.level_at(self.level.value() / _LEVEL_STEPS, low, high)

    def _style(self) -> scene.StructureStyle:
        return scene.StructureStyle(radius_kind=self._radius_kind(), scale=self.atom_scale.value(),
                                    bonds=self.show_bonds.isChecked(), cell=self.show_cell.isChecked(),
                                    polyhedra=self.show_polyhedra.isChecked(), repeat=self._repeat())

    def _redraw(self, reset_camera: bool = False) -> None:
        if self._closed:
            return
        plotter = self.plotter
        for title in list(plotter.scalar_bars.keys()):  # the two map kinds' bars have different titles
            plotter.remove_scalar_bar(title, render=False)  # one render per redraw, at its end
        self._iso_actor = None
        self._picked = []
        record = self._record
        # Relaxed candidates show their relaxed crystal unless the user chose the unrelaxed one.
        structure = record.shown_structure() if record is not None else None
        if structure is None:
            plotter.clear_actors()
            self._structure_key = None
            self._atoms = self._drawn_structure = None
            self._set_legend([])
            if record is not None:
                self.note.setText(record.error or "no structure to show")
            plotter.render()
            return
        show_map = self._density is not None and self.show_density.isChecked()
        drawn = self._density.structure if show_map else structure
        if self._density_grid is not None and show_map:
            self._density_grid = None  # the offset depends on the supercell and the side-by-side toggle
        style = self._style()
        cached = self._structure_key
        if cached is not None and cached[0] is drawn and cached[1] == style and self._atoms is not None:
            # Same crystal, same style (density, slices, level or camera changed): keep the atom,
            # bond, polyhedra and cell actors, which are most of a redraw's mesh work.
            for name in DENSITY_ACTORS:
                plotter.remove_actor(name, render=False)
        else:
            plotter.clear_actors()
            self._atoms = scene.draw_structure(plotter, drawn, style)
            self._structure_key = (drawn, style)
        self._drawn_structure = drawn
        self._set_legend(self._atoms.symbols)
        if show_map:
            self._draw_density()
        if reset_camera or not getattr(self, "_axes_added", False):
            scene.add_lattice_axes(plotter, drawn.lattice.matrix)
            self._axes_added = True
        if reset_camera:
            # Slightly off the a axis: the body diagonal (isometric) hides the cell's centre.
            plotter.renderer.view_vector(VIEW_DIRECTION, viewup=(0.0, 0.0, 1.0), render=False)
            plotter.renderer.ResetCamera()  # pyvista's reset_camera() renders even with render=False
        plotter.render()

    def _set_legend(self, symbols: list[str]) -> None:
        """The element legend, as a Qt label (a VTK legend box costs ~50 ms per software frame)."""
        entries = scene.element_legend(symbols)
        self.legend_symbols = [symbol for symbol, _ in entries]
        self.legend.setText("  ".join(
            f'<span style="color: rgb({round(r * 255)}, {round(g * 255)}, {round(b * 255)}); font-size: 16pt;">'
            f'&#9679;</span>&nbsp;{symbol}' for symbol, (r, g, b) in entries))

    def _add_vtk_legend(self) -> None:
        entries = scene.element_legend(self.legend_symbols)
        height = min(0.06 * len(entries) + 0.02, 0.5)
        self.plotter.add_legend([[symbol, colour] for symbol, colour in entries], bcolor="white", face="circle",
                                size=(0.1, height), loc="upper right", name="legend", background_opacity=0.8)

    def _draw_density(self) -> None:
        grid = self._grid()
        self._add_isosurface()
        if self.show_slices.isChecked() and self.show_slices.isEnabled():
            slices = (scene.lattice_plane_slices(grid) if self._density.periodic
                      else scene.orthogonal_slices(grid, self._density.lattice_abc, self._map_offset()))
            self.plotter.add_mesh(slices, scalars="density", cmap=scene.DENSITY_CMAP, clim=self._clim(), opacity=0.8,
                                  show_scalar_bar=False, render=False, name="slices", pickable=False)
        if not np.allclose(self._map_offset(), 0.0):
            self.plotter.add_mesh(scene.cell_outline(self._density.cell_matrix).translate(
                self._map_offset(), inplace=False), color=scene.CELL_COLOUR, line_width=1, render=False,
                name="map_cell", pickable=False)

    def _clim(self) -> tuple[float, float]:
        finite = np.asarray(self._density.density, dtype=np.float64)
        return float(np.nanmin(finite)), float(np.nanmax(finite))

    def _add_isosurface(self) -> None:
        surface = scene.isosurface(self._grid(), self._current_level())
        if surface is None:
            return
        # Coloured by its level on the map's colour scale, so the colour bar says where it sits.
        self._iso_actor = self.plotter.add_mesh(
            surface, scalars="density", cmap=scene.DENSITY_CMAP, clim=self._clim(), opacity=scene.DENSITY_OPACITY,
            smooth_shading=True, render=False, name="isosurface", pickable=False,
            scalar_bar_args=colour_bar(self._density.units))

    def _apply_projection(self) -> None:
        self.plotter.camera.SetParallelProjection(self.orthographic.isChecked())
        self.plotter.renderer.ResetCamera()
        self.plotter.render()

    def _on_level_changed(self) -> None:
        self._update_level_controls()
        self._level_timer.start()

    def _update_isosurface(self) -> None:
        self._update_level_controls()
        if self._density is None or not self.show_density.isChecked():
            return
        if self._iso_actor is not None:
            self.plotter.remove_actor(self._iso_actor, render=False)
            self._iso_actor = None
        self._add_isosurface()
        self.plotter.render()


#: Actors a redraw replaces even when the structure's actors are kept.
DENSITY_ACTORS = ("isosurface", "slices", "map_cell", "picks")

#: The density colour bar: short title on two lines, fixed font sizes (VTK otherwise scales the
#: title to the bar's width and clips it at the window's right edge in narrow views).
COLOUR_BAR = {"title": f"density\n({scene.CUBIC_UNITS})", "vertical": True, "position_x": 0.84,
              "position_y": 0.06, "height": 0.38, "width": 0.07, "color": "black", "fmt": "%.2f", "n_labels": 4, "title_font_size": 14,
              "label_font_size": 12, "unconstrained_font_size": True, "render": False}


def colour_bar(units: str) -> dict:
    """:data:`COLOUR_BAR` with the map's units in the title."""
    return {**COLOUR_BAR, "title": f"density\n({units})"}


def side_by_side_shift(cell_matrix: np.ndarray, repeat: tuple[int, int, int], axis: int = 1) -> float:
    """Shift (Å) along Cartesian ``axis`` that puts a map's cell clear of the drawn ``repeat``
    supercell of the same cell, :data:`SIDE_BY_SIDE_GAP` apart (skewed cells lean, so their
    extents along that axis are compared)."""
    corners = np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, -1).T.astype(np.float64)
    matrix = np.asarray(cell_matrix, dtype=np.float64)
    supercell = (corners * np.asarray(repeat, dtype=np.float64)) @ matrix[:, axis]
    cell = corners @ matrix[:, axis]
    return float(supercell.max() - cell.min() + SIDE_BY_SIDE_GAP)


def pv_spheres(centres: np.ndarray, radii: np.ndarray):
    """Spheres at ``centres`` (Å, shape (n, 3)) with ``radii`` (Å), one mesh."""
    import pyvista as pv

    cloud = pv.PolyData(np.asarray(centres, dtype=np.float64))
    cloud.point_data["radius"] = np.asarray(radii, dtype=np.float64)
    return cloud.glyph(geom=pv.Sphere(radius=1.0, theta_resolution=16, phi_resolution=16), scale="radius",
                       orient=False)


#: Image sizes offered by File → Export image (width × height, pixels).
EXPORT_SIZES = ("as shown", "1600 × 1200", "2400 × 1800", "3840 × 2880")


def export_image_dialog(viewer: ViewerPanel, parent=None) -> str | None:
    """Ask for a PNG file and a size, then save the view; returns the path written (None if cancelled)."""
    from PySide6.QtWidgets import QFileDialog, QInputDialog

    if viewer.record is None:
        return None
    choice, ok = QInputDialog.getItem(parent, "Export image", "Size (pixels):", list(EXPORT_SIZES), 1, True)
    if not ok:
        return None
    size = None
    if choice != EXPORT_SIZES[0]:
        try:
            width, height = (int(part) for part in choice.replace("x", "×").split("×"))
            size = (max(width, 16), max(height, 16))
        except ValueError:
            viewer.note.setText(f"Image size '{choice}' is not 'width × height'; use e.g. 1600 × 1200.")
            return None
    path, _ = QFileDialog.getSaveFileName(parent, "Export image", f"{viewer.record.name}.png", "PNG image (*.png)")
    if not path:
        return None
    if not path.lower().endswith(".png"):
        path += ".png"
    viewer.export_image(path, size)
    return path
