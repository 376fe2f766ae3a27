"""Targets panel: the formation-energy condition of generation and property windows."""

from __future__ import annotations

import math

from PySide6.QtCore import QLocale, Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QDoubleSpinBox, QGridLayout, QGroupBox, QLabel, QLineEdit,
                               QRadioButton, QSpinBox, QVBoxLayout, QWidget)

from app.engine.core.property_table import PROPERTIES
from app.engine.generation.settings import FORMATION_ENERGY_RANGE, N_DECILES, Windows, decile_of

BASE_DECILE, DECILE_BY_ENERGY, DECILE_DIRECT = "base", "energy", "direct"
INVALID_STYLE = "border: 1px solid #c81e1e;"


class TargetsPanel(QWidget):
    """Condition and windows; the windows filter the table and (optionally) the generation funnel.

    Signals
    -------
    windows_changed(dict)
        ``{property key: (min or None, max or None)}`` of the valid, non-empty windows.
    """

    windows_changed = Signal(dict)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._edges: list[float] | None = None
        self._bounds: dict[str, tuple[QLineEdit, QLineEdit]] = {}
        self._windows: Windows = {}

        condition = QGroupBox("Condition: formation-energy decile")
        self.condition_mode = QButtonGroup(self)
        self.use_base = QRadioButton("Base's own decile")
        self.use_energy = QRadioButton("Formation energy")
        self.use_direct = QRadioButton("Decile")
        for button, mode in ((self.use_base, BASE_DECILE), (self.use_energy, DECILE_BY_ENERGY),
                             (self.use_direct, DECILE_DIRECT)):
            button.setProperty("mode", mode)
            self.condition_mode.addButton(button)
        self.use_base.setChecked(True)
        self.energy = QDoubleSpinBox()
        self.energy.setRange(*FORMATION_ENERGY_RANGE)
        self.energy.setDecimals(3)
        self.energy.setSingleStep(0.1)
        self.energy.setSuffix(" eV/atom")
        self.energy.setValue(-1.5)
        self.energy_decile = QLabel("")
        self.decile = QSpinBox()
        self.decile.setRange(0, N_DECILES - 1)
        self.decile.setToolTip("0: lowest (most stable) formation energies … 9: highest")
        grid = QGridLayout(condition)
        grid.addWidget(self.use_base, 0, 0, 1, 3)
        grid.addWidget(self.use_energy, 1, 0)
        grid.addWidget(self.energy, 1, 1)
        grid.addWidget(self.energy_decile, 1, 2)
        grid.addWidget(self.use_direct, 2, 0)
        grid.addWidget(self.decile, 2, 1)
        self.energy.valueChanged.connect(self._update_energy_decile)
        self.condition_mode.buttonToggled.connect(lambda *_: self._update_condition_enabled())

        windows = QGroupBox("Property windows (filter the table)")
        wgrid = QGridLayout(windows)
        wgrid.addWidget(QLabel("min"), 0, 1)
        wgrid.addWidget(QLabel("max"), 0, 2)
        for row, spec in enumerate(PROPERTIES, start=1):
            unit = f" ({spec.unit})" if spec.unit else ""
            wgrid.addWidget(QLabel(f"{spec.label}{unit}"), row, 0)
            low, high = QLineEdit(), QLineEdit()
            for column, edit in ((1, low), (2, high)):
                validator = QDoubleValidator(edit)
                validator.setLocale(QLocale.c())  # "1.5" whatever the desktop's locale
                edit.setValidator(validator)
                edit.setPlaceholderText("—")
                edit.setMaximumWidth(80)
                edit.setObjectName(f"{spec.key}_{'min' if column == 1 else 'max'}")
                edit.textChanged.connect(self._on_window_edited)
                wgrid.addWidget(edit, row, column)
            self._bounds[spec.key] = (low, high)
        self.apply_to_generation = QCheckBox("Also require them in the generation funnel")
        self.apply_to_generation.setChecked(True)
        wgrid.addWidget(self.apply_to_generation, len(PROPERTIES) + 1, 0, 1, 3)
        self.window_problem = QLabel("")
        self.window_problem.setStyleSheet("color: #c81e1e;")
        self.window_problem.setWordWrap(True)
        wgrid.addWidget(self.window_problem, len(PROPERTIES) + 2, 0, 1, 3)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(condition)
        layout.addWidget(windows)
        layout.addStretch(1)
        self._update_condition_enabled()
        self._update_energy_decile()

    # -- condition ---------------------------------------------------------------------------

    def set_decile_edges(self, edges: list[float] | None) -> None:
        """The generator's 9 formation-energy decile edges (eV/atom), None if no generator."""
        self._edges = list(edges) if edges else None
        if self._edges:
            self.decile.setToolTip("Decile edges (eV/atom): " + ", ".join(f"{e:.2f}" for e in self._edges))
        self._update_energy_decile()

    def condition(self) -> dict:
        """The condition as ``GenerationSettings`` fields: ``decile`` or ``target_formation_energy``
        (eV/atom; the engine finds its decile), both None for the base's own decile."""
        mode = self.condition_mode.checkedButton().property("mode")
        return {"decile": self.decile.value() if mode == DECILE_DIRECT else None,
                "target_formation_energy": self.energy.value() if mode == DECILE_BY_ENERGY else None}

    def _update_condition_enabled(self) -> None:
        mode = self.condition_mode.checkedButton().property("mode")
        self.energy.setEnabled(mode == DECILE_BY_ENERGY)
        self.decile.setEnabled(mode == DECILE_DIRECT)

    def _update_energy_decile(self) -> None:
        if self._edges:
            self.energy_decile.setText(f"→ decile {decile_of(self.energy.value(), self._edges)}")
        else:
            self.energy_decile.setText("(needs the generator)")

    # -- windows -----------------------------------------------------------------------------

    def windows(self) -> Windows:
        """Valid windows currently entered."""
        return dict(self._windows)

    def generation_windows(self) -> Windows:
        """Windows for the generation funnel (empty when not applied there)."""
        return self.windows() if self.apply_to_generation.isChecked() else {}

    def set_window(self, key: str, low: float | None, high: float | None) -> None:
        """Fill one window (None: no bound)."""
        low_edit, high_edit = self._bounds[key]
        low_edit.setText("" if low is None else f"{low:g}")
        high_edit.setText("" if high is None else f"{high:g}")

    def _on_window_edited(self) -> None:
        windows: Windows = {}
        problems = []
        for spec in PROPERTIES:
            low_edit, high_edit = self._bounds[spec.key]
            low, high = self._number(low_edit), self._number(high_edit)
            bad = low is not None and high is not None and low > high
            for edit in (low_edit, high_edit):
                edit.setStyleSheet(INVALID_STYLE if bad else "")
            if bad:
                problems.append(f"{spec.label}: the minimum is above the maximum (window ignored).")
            elif low is not None or high is not None:
                windows[spec.key] = (low, high)
        self.window_problem.setText("\n".join(problems))
        if windows != self._windows:
            self._windows = windows
            self.windows_changed.emit(dict(windows))

    @staticmethod
    def _number(edit: QLineEdit) -> float | None:
        text = edit.text().strip().replace(",", ".")
        if not text or text in ("-", "+", "."):
            return None
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) else None
