"""Results panel: the sortable, filterable table of structures and candidates."""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QTableView, QVBoxLayout, QWidget)

from app.engine.core.property_table import PROPERTIES
from app.ui.records import GENERATED, LIBRARY, CrystalRecord
from app.ui.results_filter import ResultsFilter
from app.ui.results_model import COLUMN_INDEX, RECORD_ROLE, ResultsModel

ORIGIN_CHOICES = (("All rows", None), ("Library", LIBRARY), ("Generated", GENERATED))
_COLUMN_WIDTHS = {"origin": 70, "name": 170, "formula": 80, "space_group": 100, "sites": 45, "status": 170,
                  "valid": 60, "novel": 60, "distance": 70, "e_above_hull": 70,
                  "decomposition": 120, "relaxed_space_group": 90, "relaxation": 90}


class ResultsPanel(QWidget):
    """Table of all records with a filter bar; the Targets windows filter it too.

    Signals
    -------
    current_changed(object)
        The record of the current row (None when there is none).
    export_requested
    """

    current_changed = Signal(object)
    export_requested = Signal()

    def __init__(self, model: ResultsModel, parent=None) -> None:
        super().__init__(parent)
        self.filter = ResultsFilter(self)
        self.filter.setSourceModel(model)
        self.view = QTableView()
        self.view.setModel(self.filter)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # insertion order until the user sorts
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setAlternatingRowColors(True)
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.verticalHeader().hide()
        self.view.horizontalHeader().setSectionsMovable(True)
        for key, width in _COLUMN_WIDTHS.items():
            self.view.setColumnWidth(COLUMN_INDEX[key], width)
        for spec in PROPERTIES:
            self.view.setColumnWidth(COLUMN_INDEX[spec.key], 118)
        self.view.selectionModel().currentRowChanged.connect(self._on_current)

        self.text = QLineEdit()
        self.text.setPlaceholderText("Filter by name or formula")
        self.text.setClearButtonEnabled(True)
        self.text.textChanged.connect(self.filter.set_text)
        self.origin = QComboBox()
        for label, origin in ORIGIN_CHOICES:
            self.origin.addItem(label, origin)
        self.origin.currentIndexChanged.connect(lambda _i: self.filter.set_origin(self.origin.currentData()))
        self.kept_only = QCheckBox("Hide rejected candidates")
        self.kept_only.toggled.connect(self.filter.set_kept_only)
        # E_hull filter: the lowest value means "any" (no limit).
        self.max_e_above_hull = QDoubleSpinBox()
        self.max_e_above_hull.setRange(-0.01, 5.0)
        self.max_e_above_hull.setSingleStep(0.05)
        self.max_e_above_hull.setDecimals(2)
        self.max_e_above_hull.setSpecialValueText("E_hull: any")
        self.max_e_above_hull.setPrefix("E_hull ≤ ")
        self.max_e_above_hull.setSuffix(" eV/atom")
        self.max_e_above_hull.setValue(-0.01)
        self.max_e_above_hull.setToolTip("Show only candidates at most this far above the convex hull")
        self.max_e_above_hull.valueChanged.connect(
            lambda value: self.filter.set_max_e_above_hull(None if value < 0 else value))
        self.export_unrelaxed = QCheckBox("Export unrelaxed")
        self.export_unrelaxed.setToolTip("Write the decoded cells of relaxed candidates instead of the relaxed ones")
        self.count = QLabel("")
        self.windows_note = QLabel("")
        self.windows_note.setStyleSheet("color: #1f5fa0;")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Export the selected rows (or all rows shown) as CIFs with a CSV/JSON summary")
        self.export_button.clicked.connect(self.export_requested)

        bar = QHBoxLayout()
        bar.addWidget(self.text, 1)
        bar.addWidget(self.origin)
        bar.addWidget(self.kept_only)
        bar.addWidget(self.max_e_above_hull)
        bar.addWidget(self.windows_note)
        bar.addWidget(self.count)
        bar.addWidget(self.export_unrelaxed)
        bar.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)
        for signal in (self.filter.rowsInserted, self.filter.rowsRemoved, self.filter.modelReset,
                       self.filter.layoutChanged):
            signal.connect(self._update_count)
        self._model = model
        self._update_count()

    def set_windows(self, windows: dict) -> None:
        """Filter rows by property windows (from the Targets panel)."""
        self.filter.set_windows(windows)
        self.windows_note.setText(f"{len(windows)} property window{'s' if len(windows) != 1 else ''}"
                                  if windows else "")
        self._update_count()

    def selected_records(self) -> list[CrystalRecord]:
        return [index.data(RECORD_ROLE) for index in self.view.selectionModel().selectedRows()]

    def records_to_export(self) -> list[CrystalRecord]:
        """The selected rows, or every row shown when nothing is selected."""
        return self.selected_records() or self.filter.visible_records()

    def select(self, records: list[CrystalRecord]) -> None:
        selection = self.view.selectionModel()
        selection.clearSelection()
        for record in records:
            row = self._model.row_of(record)
            if row is None:
                continue
            index = self.filter.mapFromSource(self._model.index(row, 0))
            if index.isValid():
                selection.select(index, QItemSelectionModel.SelectionFlag.Select
                                 | QItemSelectionModel.SelectionFlag.Rows)

    def _on_current(self, current, _previous) -> None:
        self.current_changed.emit(current.data(RECORD_ROLE) if current.isValid() else None)

    def _update_count(self, *_args) -> None:
        self.count.setText(f"{self.filter.rowCount():,} of {self._model.rowCount():,} rows")
