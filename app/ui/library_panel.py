"""Library panel: the structures the user opened, with their read warnings and errors."""

from __future__ import annotations

import html

from PySide6.QtCore import QItemSelectionModel, QSortFilterProxyModel, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QLabel, QPushButton, QTreeView,
                               QVBoxLayout, QWidget)

from app.ui.records import LIBRARY, CrystalRecord, choose_ordering
from app.ui.results_model import COLUMN_INDEX, RECORD_ROLE, SORT_ROLE, ResultsModel

#: Columns of the shared model shown in the library.
LIBRARY_COLUMNS = ("name", "formula", "space_group", "sites", "status")


class LibraryProxy(QSortFilterProxyModel):
    """Library rows of the shared :class:`ResultsModel`, with a few columns."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self._columns = {COLUMN_INDEX[key] for key in LIBRARY_COLUMNS}

    def filterAcceptsRow(self, source_row, source_parent) -> bool:  # noqa: N802
        return self.sourceModel().record_at(source_row).origin == LIBRARY

    def filterAcceptsColumn(self, source_column, source_parent) -> bool:  # noqa: N802
        return source_column in self._columns


class LibraryPanel(QWidget):
    """List of library entries; a bad file is a red entry with its message.

    Signals
    -------
    selection_changed(list)
        Selected records, in the order they were selected (base first, then second).
    open_files_requested, open_folder_requested
    remove_requested(list)
        Records the user wants out of the library.
    """

    selection_changed = Signal(list)
    open_files_requested = Signal()
    open_folder_requested = Signal()
    remove_requested = Signal(list)

    def __init__(self, model: ResultsModel, parent=None) -> None:
        super().__init__(parent)
        self._model = model
        self.proxy = LibraryProxy(self)
        self.proxy.setSourceModel(model)
        self.view = QTreeView()
        self.view.setModel(self.proxy)
        self.view.setRootIsDecorated(False)
        self.view.setAlternatingRowColors(True)
        self.view.setUniformRowHeights(True)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # insertion order until the user sorts
        for column, width in enumerate((110, 70, 90, 36)):
            self.view.setColumnWidth(column, width)
        self.view.selectionModel().selectionChanged.connect(self._on_selection)
        # Removing rows (e.g. a new generation dropping the last run's rejected candidates) resets the
        # model, which clears the selection without a signal; the selected entries (the base) stay selected.
        self._selection_before_reset: list[CrystalRecord] = []
        model.modelAboutToBeReset.connect(lambda: setattr(self, "_selection_before_reset", self.selected_records()))
        model.modelReset.connect(self._restore_selection)

        self.details = QLabel("Drop CIF or POSCAR files or folders on the window, or use Open.")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        open_files = QPushButton("Open files…")
        open_files.clicked.connect(self.open_files_requested)
        open_folder = QPushButton("Open folder…")
        open_folder.clicked.connect(self.open_folder_requested)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setEnabled(False)
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self.selected_records()))
        buttons = QHBoxLayout()
        for button in (open_files, open_folder, self.remove_button):
            buttons.addWidget(button)
        buttons.addStretch(1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(buttons)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.details)
        layout.addLayout(self._ordering_row())
        model.dataChanged.connect(lambda *_: self._show_details())

    def _ordering_row(self) -> QHBoxLayout:
        """Picker of the ordered approximant of a disordered entry (hidden for ordered ones)."""
        self.ordering_label = QLabel("Ordering:")
        self.ordering_box = QComboBox()
        self.ordering_box.setToolTip("Ordered approximants of this disordered structure, lowest predicted "
                                     "formation energy first; the one chosen is shown and predicted.")
        self.ordering_box.activated.connect(self._on_ordering_chosen)
        row = QHBoxLayout()
        row.addWidget(self.ordering_label)
        row.addWidget(self.ordering_box, 1)
        self.ordering_label.hide()
        self.ordering_box.hide()
        return row

    def _show_ordering(self, record: CrystalRecord | None) -> None:
        ordering = record.ordering if record is not None else None
        choices = (ordering or {}).get("choices") or []
        visible = len(choices) > 1
        self.ordering_label.setVisible(visible)
        self.ordering_box.setVisible(visible)
        if not visible:
            return
        self.ordering_box.blockSignals(True)
        self.ordering_box.clear()
        for number, choice in enumerate(choices, start=1):
            energy = choice["properties"].get("formation_energy_per_atom")
            lowest = " (lowest)" if number == 1 else ""
            self.ordering_box.addItem(f"{number}: {choice['n_sites']} sites, ΔHf {energy:.3f} eV/atom{lowest}")
        self.ordering_box.setCurrentIndex(ordering["chosen"])
        self.ordering_box.blockSignals(False)

    def _on_ordering_chosen(self, index: int) -> None:
        records = self.selected_records()
        if len(records) != 1 or not records[0].ordering or index == records[0].ordering["chosen"]:
            return
        choose_ordering(records[0], index)
        self._model.refresh(records)
        self.selection_changed.emit(records)  # the viewer shows the newly chosen ordering

    def selected_records(self) -> list[CrystalRecord]:
        rows = self.view.selectionModel().selectedRows()
        return [index.data(RECORD_ROLE) for index in rows]

    def select(self, records: list[CrystalRecord]) -> None:
        """Select these records (first one current)."""
        selection = self.view.selectionModel()
        selection.clearSelection()
        for position, record in enumerate(records):
            row = self._model.row_of(record)
            if row is None:
                continue
            # Column 0 of the source (origin) is hidden here: map a column the proxy shows.
            index = self.proxy.mapFromSource(self._model.index(row, COLUMN_INDEX["name"]))
            flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
            if position == 0:
                flags |= QItemSelectionModel.SelectionFlag.Current
            selection.select(index, flags)

    def entries(self) -> list[CrystalRecord]:
        """All library records, in displayed order."""
        return [self.proxy.index(row, 0).data(RECORD_ROLE) for row in range(self.proxy.rowCount())]

    def _restore_selection(self) -> None:
        kept = [r for r in self._selection_before_reset if self._model.row_of(r) is not None]
        self._selection_before_reset = []
        if kept:
            self.select(kept)

    def _on_selection(self, *_args) -> None:
        records = self.selected_records()
        self.remove_button.setEnabled(bool(records))
        self._show_details()
        self.selection_changed.emit(records)

    def _show_details(self) -> None:
        records = self.selected_records()
        self._show_ordering(records[0] if len(records) == 1 else None)
        if len(records) != 1:
            self.details.setText(f"{len(records)} entries selected." if records else "")
            return
        record = records[0]
        parts = [f"<b>{html.escape(record.name)}</b>"]
        if record.ordering:
            chosen = record.ordering["chosen"] + 1
            parts.append(f"<span style='color:#a06e00'>⚠ {html.escape(record.ordering['note'])} Showing ordering "
                         f"{chosen} of {len(record.ordering.get('choices') or [])}.</span>")
        if record.error:
            parts.append(f"<span style='color:#c81e1e'>{html.escape(record.error)}</span>")
        if record.prediction_error:
            parts.append(f"<span style='color:#c81e1e'>Not predicted: {html.escape(record.prediction_error)}</span>")
        parts += [f"<span style='color:#a06e00'>⚠ {html.escape(w)}</span>" for w in record.warnings]
        self.details.setText("<br>".join(parts))
