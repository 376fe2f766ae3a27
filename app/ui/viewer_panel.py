"""3-D viewer: ball-and-stick crystal, cell outline, supercell, density isosurface and slices."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSlider, QSpinBox, QVBoxLayout, QWidget
from pyvistaqt import QtInteractor

from app.engine.core.errors import CancelledError, CrystalDesignerError, StructureReadError
from app.ui import scene
from app.ui.records import CrystalRecord

logger = logging.getLogger(__name__)

NON_CUBIC_NOTE = "density map: only cubic cells ≤ 40 sites"
DensityProvider = Callable[[CrystalRecord], Awaitable[scene.DensityView]]
_LEVEL_STEPS = 100
#: Initial isosurface level, as a fraction of the map's range: compact shells around the atoms.
DEFAULT_LEVEL = 0.7
#: Direction from the crystal towards the camera when a structure is first shown.
VIEW_DIRECTION = (2.2, 1.0, 0.7)


class ViewerPanel(QWidget):
    """Shows one record; asks ``density_provider`` for its map when density display is on.

    Parameters
    ----------
    density_provider : callable
        ``await density_provider(record)`` → :class:`~app.ui.scene.DensityView`; raises
        ``StructureReadError`` for structures without a map (non-cubic, > 40 sites).
    """

    def __init__(self, density_provider: DensityProvider, parent=None) -> None:
        super().__init__(parent)
        self._density_provider = density_provider
        self._record: CrystalRecord | None = None
        self._density: scene.DensityView | None = None
        self._density_grid = None
        self._iso_actor = None
        self._density_task: asyncio.Future | None = None
        self._density_request = 0

        # No auto-update timer: it re-renders 5×/s even when nothing changed, and a software
        # (llvmpipe) render takes 100–200 ms on a busy CPU. Every change here calls render().
        self.plotter = QtInteractor(self, auto_update=False)
        self.plotter.set_background("white")
        self.title = QLabel("Select a structure to view it.")
        self.note = QLabel("")
        self.note.setStyleSheet("color: #a05a00;")
        self.note.setWordWrap(True)

        self.supercell = [self._repeat_box(axis) for axis in "abc"]
        self.show_bonds = self._check("Bonds", True, self._redraw)
        self.show_cell = self._check("Cell", True, self._redraw)
        self.show_density = self._check("Density", True, self._on_density_toggled)
        self.show_slices = self._check("Slices", False, self._redraw)
        self.level = QSlider(Qt.Orientation.Horizontal)
        self.level.setRange(0, _LEVEL_STEPS)
        self.level.setValue(round(DEFAULT_LEVEL * _LEVEL_STEPS))
        self.level.setToolTip("Isosurface level of the density map")
        # Dragging emits many values per frame; one isosurface per event-loop pass is enough.
        self._level_timer = QTimer(self)
        self._level_timer.setSingleShot(True)
        self._level_timer.setInterval(0)
        self._level_timer.timeout.connect(self._update_isosurface)
        self.level.valueChanged.connect(lambda _value: self._on_level_changed())
        self.level_label = QLabel("")
        self.level_label.setMinimumWidth(90)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("Supercell"))
        for box in self.supercell:
            controls.addWidget(box)
        for widget in (self.show_bonds, self.show_cell, self.show_density, self.show_slices):
            controls.addWidget(widget)
        controls.addStretch(1)
        level_row = QHBoxLayout()
        level_row.addWidget(QLabel("Isosurface level"))
        level_row.addWidget(self.level, 1)
        level_row.addWidget(self.level_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.title)
        layout.addWidget(self.plotter.interactor, 1)
        layout.addLayout(controls)
        layout.addLayout(level_row)
        layout.addWidget(self.note)
        self._update_level_controls()

    def _repeat_box(self, axis: str) -> QSpinBox:
        box = QSpinBox()
        box.setRange(1, 3)
        box.setToolTip(f"Cells along {axis}")
        box.valueChanged.connect(lambda _value: self._redraw(reset_camera=True))
        return box

    def _check(self, text: str, checked: bool, slot) -> QCheckBox:
        box = QCheckBox(text)
        box.setChecked(checked)
        box.toggled.connect(lambda _checked: slot())
        return box

    # -- public ------------------------------------------------------------------------------

    @property
    def record(self) -> CrystalRecord | None:
        return self._record

    @property
    def density_view(self) -> scene.DensityView | None:
        """The density map currently shown (None if none)."""
        return self._density

    def show_record(self, record: CrystalRecord | None) -> None:
        """Draw ``record`` (or nothing), then fetch its density map if wanted."""
        if record is self._record and record is not None:
            return
        self._record = record
        self._density = None
        self._density_grid = None
        self._cancel_density_task()
        self.note.setText("")
        if record is None:
            self.title.setText("Select a structure to view it.")
        else:
            label = f"{record.name} — {record.formula or '?'}"
            self.title.setText(label + (f"  [{record.space_group}]" if record.space_group else ""))
            if record.is_candidate and record.density is not None and record.get_structure() is not None:
                structure = record.get_structure()
                self._density = scene.DensityView(np.asarray(record.density, dtype=np.float32),
                                                  tuple(structure.lattice.abc), structure)
        self._update_level_controls()
        self._redraw(reset_camera=True)
        self._request_density()

    async def wait_density(self) -> None:
        """Return once the density map being fetched (if any) is drawn or has failed."""
        task = self._density_task
        if task is not None:
            await asyncio.wait([task])

    def refresh(self, record: CrystalRecord) -> None:
        """Redraw if ``record`` is the one shown (e.g. its structure has just been re-read)."""
        if record is self._record:
            self._redraw()
            self._request_density()

    def close_plotter(self) -> None:
        """Release the VTK window (call before the widget goes away)."""
        self._cancel_density_task()
        self.plotter.close()

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
                self.note.setText(NON_CUBIC_NOTE)
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
        self._density = view
        self._density_grid = None
        self._update_level_controls()
        self._redraw(reset_camera=True)

    def _cancel_density_task(self) -> None:
        if self._density_task is not None and not self._density_task.done():
            self._density_task.cancel()
        self._density_task = None

    # -- drawing -----------------------------------------------------------------------------

    def _repeat(self) -> tuple[int, int, int]:
        return tuple(box.value() for box in self.supercell)  # type: ignore[return-value]

    def _grid(self):
        if self._density is not None and self._density_grid is None:
            self._density_grid = scene.density_grid(self._density)
        return self._density_grid

    def _update_level_controls(self) -> None:
        has_density = self._density is not None
        self.level.setEnabled(has_density)
        self.show_slices.setEnabled(has_density)
        self.level_label.setText(f"{self._current_level():.3g} Z/Å³" if has_density else "")

    def _current_level(self) -> float:
        if self._density is None:
            return 0.0
        low, high = scene.level_range(self._density.density)
        return scene.level_at(self.level.value() / _LEVEL_STEPS, low, high)

    def _redraw(self, reset_camera: bool = False) -> None:
        plotter = self.plotter
        plotter.clear()
        self._iso_actor = None
        record = self._record
        # Relaxed candidates show their relaxed crystal unless the user chose the unrelaxed one.
        structure = record.shown_structure() if record is not None else None
        if structure is None:
            if record is not None:
                self.note.setText(record.error or "no structure to show")
            plotter.render()
            return
        show_map = self._density is not None and self.show_density.isChecked()
        drawn = self._density.structure if show_map else structure
        atoms = scene.display_atoms(drawn, self._repeat())
        plotter.add_mesh(scene.atoms_mesh(atoms), scalars="rgb", rgb=True, smooth_shading=True, render=False,
                         name="atoms")
        if self.show_bonds.isChecked():
            bonds = scene.bonds_mesh(atoms, scene.bond_pairs(atoms))
            if bonds is not None:
                plotter.add_mesh(bonds, scalars="rgb", rgb=True, smooth_shading=True, render=False, name="bonds")
        if self.show_cell.isChecked():
            plotter.add_mesh(scene.cell_outline(drawn.lattice.matrix), color=scene.CELL_COLOUR, line_width=2,
                             render=False, name="cell")
        if show_map:
            self._add_isosurface()
            if self.show_slices.isChecked() and self.show_slices.isEnabled():
                plotter.add_mesh(scene.orthogonal_slices(self._grid()), scalars="density", cmap="viridis",
                                 opacity=0.7, show_scalar_bar=False, render=False, name="slices")
        if reset_camera:
            # Slightly off the a axis: the body diagonal (isometric) hides the cell's centre.
            plotter.renderer.view_vector(VIEW_DIRECTION, viewup=(0.0, 0.0, 1.0), render=False)
            plotter.renderer.ResetCamera()  # pyvista's reset_camera() renders even with render=False
        plotter.render()

    def _add_isosurface(self) -> None:
        surface = scene.isosurface(self._grid(), self._current_level())
        if surface is not None:
            self._iso_actor = self.plotter.add_mesh(surface, color=scene.ISOSURFACE_COLOUR, opacity=0.3,
                                                    smooth_shading=True, render=False, name="isosurface")

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
