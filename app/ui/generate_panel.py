"""Generate panel: base structure(s), sampling settings, funnel options, progress and funnel."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QProgressBar,
                               QPushButton, QSpinBox, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from app.engine.generation.settings import (COUNT_RANGE, DEFAULT_MAX_E_ABOVE_HULL, FUNNEL_STAGES,
                                           MIN_DISTANCE_RANGE, MODE_LABELS, MODES_WITH_BASE, MODES_WITH_SECOND,
                                           SEED_RANGE, SIGMA_RANGE, GenerationSettings, Windows)
from app.settings import GenerationDefaults
from app.ui.records import CrystalRecord


#: Label of the funnel's last row: stable + unique + novel candidates.
SUN_LABEL = "S.U.N. (stable, unique, novel)"


class GeneratePanel(QWidget):
    """Settings of one generation run and its progress; the controller does the work.

    Signals
    -------
    generate_requested, cancel_requested
    """

    generate_requested = Signal()
    cancel_requested = Signal()

    def __init__(self, defaults: GenerationDefaults, parent=None) -> None:
        super().__init__(parent)
        self._base: CrystalRecord | None = None
        self._second: CrystalRecord | None = None
        self._available = False
        self._running = False

        self.unavailable = QLabel("Loading the generator models…")
        self.unavailable.setWordWrap(True)
        self.unavailable.setStyleSheet("color: #a05a00;")
        self.base_label = QLabel()
        self.base_label.setWordWrap(True)
        self.mode = QComboBox()
        for key, label in MODE_LABELS.items():
            self.mode.addItem(label, key)
        self.count = QSpinBox()
        self.count.setRange(*COUNT_RANGE)
        self.count.setGroupSeparatorShown(True)
        self.sigma = QDoubleSpinBox()
        self.sigma.setRange(*SIGMA_RANGE)
        self.sigma.setSingleStep(0.1)
        self.sigma.setToolTip("Spread of the latent samples around the base (latent units)")
        self.seed = QSpinBox()
        self.seed.setRange(*SEED_RANGE)
        self.min_distance = QDoubleSpinBox()
        self.min_distance.setRange(*MIN_DISTANCE_RANGE)
        self.min_distance.setSingleStep(0.1)
        self.min_distance.setSuffix(" Å")
        self.charge_balance = QCheckBox("Charge balanced")
        self.same_formula = QCheckBox("Same formula as base")
        self.novel = QCheckBox("Not in training set")
        self.unique = QCheckBox("Unique")
        # The last funnel stages: CHGNet relaxation and the energy above the reference hull.
        self.relax = QCheckBox("Relax kept candidates (CHGNet)")
        self.relax.setChecked(GenerationSettings.relax)
        self.relax.setToolTip("Relax cell and positions of the kept candidates before the hull and novelty stages")
        self.relax_all = QCheckBox("Relax every decoded candidate")
        self.relax_all.setChecked(GenerationSettings.relax_all)
        self.relax_all.setToolTip("Also relax candidates the earlier filters rejected (slower)")
        self.relax.toggled.connect(self.relax_all.setEnabled)
        self.near_hull = QCheckBox("Near the hull")
        self.near_hull.setChecked(GenerationSettings.require_near_hull)
        self.max_e_above_hull = QDoubleSpinBox()
        self.max_e_above_hull.setRange(0.0, 2.0)
        self.max_e_above_hull.setDecimals(3)
        self.max_e_above_hull.setSingleStep(0.05)
        self.max_e_above_hull.setSuffix(" eV/atom")
        self.max_e_above_hull.setValue(DEFAULT_MAX_E_ABOVE_HULL)
        self.max_e_above_hull.setToolTip("Largest energy above the reference hull a kept candidate may have")
        self.near_hull.toggled.connect(self.max_e_above_hull.setEnabled)
        self.apply_defaults(defaults)
        self.mode.currentIndexChanged.connect(lambda _i: self._update_enabled())

        form = QFormLayout()
        form.addRow("Mode", self.mode)
        form.addRow("Samples", self.count)
        form.addRow("σ", self.sigma)
        form.addRow("Seed", self.seed)
        form.addRow("Min. distance", self.min_distance)
        filters = QVBoxLayout()
        for box in (self.charge_balance, self.same_formula, self.novel, self.unique):
            filters.addWidget(box)
        hull_row = QHBoxLayout()
        hull_row.addWidget(self.near_hull)
        hull_row.addWidget(QLabel("E_hull ≤"))
        hull_row.addWidget(self.max_e_above_hull, 1)
        filters.addLayout(hull_row)
        filters.addWidget(self.relax)
        filters.addWidget(self.relax_all)

        self.generate_button = QPushButton("Generate")
        self.generate_button.clicked.connect(self.generate_requested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.cancel_button)

        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m samples")
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.funnel = QTreeWidget()
        self.funnel.setHeaderLabels(["Funnel stage", "Count"])
        self.funnel.setRootIsDecorated(False)
        self.funnel.setColumnWidth(0, 190)
        self.funnel.setMinimumHeight(120)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.unavailable)
        layout.addWidget(self.base_label)
        layout.addLayout(form)
        layout.addWidget(QLabel("Keep only candidates that are:"))
        layout.addLayout(filters)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.funnel, 1)
        self.set_selection([])
        self._update_enabled()

    # -- settings ----------------------------------------------------------------------------

    def apply_defaults(self, defaults: GenerationDefaults) -> None:
        index = self.mode.findData(defaults.mode)
        self.mode.setCurrentIndex(max(index, 0))
        self.count.setValue(defaults.count)
        self.sigma.setValue(defaults.sigma)
        self.seed.setValue(defaults.seed)
        self.min_distance.setValue(defaults.min_distance)
        self.charge_balance.setChecked(defaults.require_charge_balance)
        self.same_formula.setChecked(defaults.require_same_formula)
        self.novel.setChecked(defaults.require_novel)
        self.unique.setChecked(defaults.require_unique)

    def defaults(self) -> GenerationDefaults:
        """The current values, to remember in the settings."""
        return GenerationDefaults(
            mode=self.mode.currentData(), count=self.count.value(), sigma=self.sigma.value(), seed=self.seed.value(),
            min_distance=self.min_distance.value(), require_charge_balance=self.charge_balance.isChecked(),
            require_same_formula=self.same_formula.isChecked(), require_novel=self.novel.isChecked(),
            require_unique=self.unique.isChecked())

    def generation_settings(self, property_windows: Windows | None = None, decile: int | None = None,
                            target_formation_energy: float | None = None) -> GenerationSettings:
        """The engine's settings of one run: this panel's values plus the Targets panel's.

        Raises
        ------
        CrystalDesignerError
            The engine's message, for impossible values.
        """
        return GenerationSettings(**vars(self.defaults()), property_windows=dict(property_windows or {}),
                                  decile=decile, target_formation_energy=target_formation_energy,
                                  relax=self.relax.isChecked(),
                                  relax_all=self.relax.isChecked() and self.relax_all.isChecked(),
                                  require_near_hull=self.near_hull.isChecked(),
                                  max_e_above_hull=self.max_e_above_hull.value())

    @property
    def mode_key(self) -> str:
        return self.mode.currentData()

    # -- base --------------------------------------------------------------------------------

    @property
    def base(self) -> CrystalRecord | None:
        return self._base

    @property
    def second(self) -> CrystalRecord | None:
        return self._second

    def set_selection(self, records: list[CrystalRecord]) -> None:
        """Library selection: the first is the base, the second the interpolation end point."""
        usable = [r for r in records if r.has_structure]
        self._base = usable[0] if usable else None
        self._second = usable[1] if len(usable) > 1 else None
        if self._base is None:
            text = "Base: select a structure in the Library."
        else:
            text = f"Base: <b>{self._base.formula}</b> ({self._base.name})"
            if self._second is not None:
                text += f"<br>Second: <b>{self._second.formula}</b> ({self._second.name})"
        self.base_label.setText(text)
        self._update_enabled()

    # -- state -------------------------------------------------------------------------------

    def set_available(self, available: bool, message: str | None = None) -> None:
        """Whether the generator loaded; ``message`` says why not."""
        self._available = available
        self.unavailable.setText("" if available else (message or "generator models not available"))
        self.unavailable.setVisible(not available)
        self._update_enabled()

    def missing_input(self) -> str | None:
        """What is missing to start the chosen mode, or None."""
        mode = self.mode_key
        if mode in MODES_WITH_BASE and self._base is None:
            return "Select a base structure in the Library."
        if mode in MODES_WITH_SECOND and self._second is None:
            return "Select two structures in the Library (Ctrl+click) to interpolate."
        return None

    def _update_enabled(self) -> None:
        ready = self._available and not self._running and self.missing_input() is None
        self.generate_button.setEnabled(ready)
        self.cancel_button.setEnabled(self._running)
        hint = self.missing_input() if self._available and not self._running else None
        self.generate_button.setToolTip(hint or "")

    def set_running(self, running: bool, total: int = 0) -> None:
        self._running = running
        if running:
            self.progress.setFormat("%v / %m samples")
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(0)
            self.status.setText("Starting…")
            self.funnel.clear()
        self._update_enabled()

    def set_relaxing(self, done: int, total: int, message: str) -> None:
        """Progress of the CHGNet relaxation of the kept candidates (after every sample is decoded)."""
        self._set_bar("%v / %m relaxed", done, total)
        self.status.setText(f"Relaxing {total:,} kept candidate{'s' if total != 1 else ''} with CHGNet: {message}")

    def set_progress(self, done: int, total: int, kept: int) -> None:
        self._set_bar("%v / %m samples", done, total)
        self.status.setText(f"{done:,} of {total:,} samples, {kept:,} kept")

    def _set_bar(self, text: str, done: int, total: int) -> None:
        # QProgressBar.setValue repaints at once (tens of ms on a busy software display); with updates
        # off it is only marked dirty and painted with the rest of the window in the next pass.
        self.progress.setUpdatesEnabled(False)
        try:
            self.progress.setFormat(text)
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(done)
        finally:
            self.progress.setUpdatesEnabled(True)

    def show_funnel(self, funnel: dict[str, int]) -> None:
        """The funnel counts, then the S.U.N. count (stable, unique and novel) when the run has one."""
        self.funnel.clear()
        for stage in FUNNEL_STAGES:
            item = QTreeWidgetItem([stage.label, f"{funnel.get(stage.key, 0):,}"])
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.funnel.addTopLevelItem(item)
        if "sun" in funnel:
            item = QTreeWidgetItem([SUN_LABEL, f"{funnel['sun']:,}"])
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            item.setToolTip(0, "Near the hull (E_hull at most the threshold after relaxation), unique and "
                               "structurally novel (no known crystal of its formula matches it)")
            font = item.font(0)
            font.setBold(True)
            item.setFont(0, font)
            item.setFont(1, font)
            self.funnel.addTopLevelItem(item)

    def set_status(self, text: str) -> None:
        self.status.setText(text)
