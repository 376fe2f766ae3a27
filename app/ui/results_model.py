"""The table model of all records (library structures and generated candidates).

One instance is the app's store of records: the Library panel and the Results table are two
filtered views of it, so an entry updated by a prediction is updated everywhere at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor

from app.engine.core.property_table import PROPERTIES
from app.engine.generation.settings import FUNNEL_STAGES, failed_stages
from app.ui.records import FAILED, GENERATED, PREDICTING, READING, CrystalRecord

#: Role returning a value that sorts naturally (numbers as numbers, missing values last).
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
#: Role returning the :class:`CrystalRecord` of the row.
RECORD_ROLE = Qt.ItemDataRole.UserRole + 2

ERROR_BRUSH = QBrush(QColor(200, 30, 30))
REJECTED_BRUSH = QBrush(QColor(140, 140, 140))
WARNING_BRUSH = QBrush(QColor(170, 110, 0))


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def _status(record: CrystalRecord) -> str:
    if record.is_candidate:
        return "kept" if record.kept else f"rejected: {record.rejection()}"
    if record.error:
        return f"error: {record.error}"
    if record.status == READING:
        return "reading…"
    if record.status == PREDICTING:
        return "predicting…"
    if record.prediction_error:
        return f"not predicted: {record.prediction_error}"
    if record.warnings:
        return f"⚠ {len(record.warnings)} warning{'s' if len(record.warnings) > 1 else ''}"
    return "ready"


def _validity(record: CrystalRecord) -> str:
    if not record.is_candidate:
        return ""
    failed = [stage.rejection for stage in failed_stages(record.flags, validity_only=True)]
    return "✗ " + ", ".join(failed) if failed else "✓"


def _novelty(record: CrystalRecord) -> str:
    # "novel" is the formula/space-group flag of sessions saved before the structural test.
    flag = next((key for key in ("structurally_novel", "novel") if key in record.flags), None)
    if not record.is_candidate or flag is None:
        return ""
    return "novel" if record.flags[flag] else "known"


@dataclass(frozen=True)
class Column:
    """One table column: header text and how a record shows and sorts in it."""

    key: str
    header: str
    display: Callable[[CrystalRecord], str]
    sort: Callable[[CrystalRecord], object]
    tooltip: str = ""


def _property_column(spec) -> Column:
    unit = f"({spec.unit})" if spec.unit else ""
    # Two-line header (name, unit) keeps the eight property columns narrow.
    return Column(spec.key, f"{spec.label}\n{unit}".rstrip(), lambda r, k=spec.key: _number(r.property(k)),
                  lambda r, k=spec.key: r.property(k), f"{spec.label} {unit}: {spec.origin}")


COLUMNS: tuple[Column, ...] = (
    Column("origin", "Origin", lambda r: r.origin, lambda r: r.origin),
    Column("name", "Name", lambda r: r.name, lambda r: r.name.lower()),
    Column("formula", "Formula", lambda r: r.formula or "", lambda r: r.formula),
    Column("space_group", "Space group", lambda r: r.space_group or "", lambda r: r.space_group),
    Column("sites", "Sites", lambda r: "" if r.n_sites is None else str(r.n_sites), lambda r: r.n_sites),
    Column("status", "Status", _status, _status, "Reading/prediction state, or why a candidate was rejected"),
    Column("valid", "Valid", _validity, _validity, ", ".join(s.label for s in FUNNEL_STAGES if s.validity)),
    Column("novel", "Novelty", _novelty, _novelty, "Neither the base nor a training crystal (structure match)"),
    Column("e_above_hull", "E_hull\n(eV/atom)", lambda r: _number(r.e_above_hull),
           lambda r: r.e_above_hull,
           "Energy above the reference convex hull from the predicted formation energy "
           "(of the relaxed crystal for relaxed candidates); negative: below the hull"),
    Column("decomposition", "Decomposition", lambda r: r.stability.get("decomposition") or "",
           lambda r: r.stability.get("decomposition") or "", "The hull phases it would decompose into"),
    Column("relaxed_space_group", "Relaxed\nspace group", lambda r: r.stability.get("relaxed_space_group") or "",
           lambda r: r.stability.get("relaxed_space_group") or "", "Space group of the relaxed, refined crystal"),
    Column("relaxation", "Relaxation", lambda r: r.stability.get("relaxation_state") or "",
           lambda r: r.stability.get("relaxation_state") or "", "CHGNet relaxation: relaxed, failed (why) or not relaxed"),
    Column("distance", "Distance\nto base", lambda r: _number(r.latent_distance, 2), lambda r: r.latent_distance,
           "Distance of the candidate's latent vector from the base's (latent units)"),
    *(_property_column(spec) for spec in PROPERTIES),
    Column("model", "Predictor", lambda r: r.model or "", lambda r: r.model or "",
           "Property predictor of this row: cgcnn (graph models) or pointnet (point-cloud model)"),
)
COLUMN_INDEX = {column.key: i for i, column in enumerate(COLUMNS)}
NUMERIC_COLUMNS = frozenset({"sites", "distance", "e_above_hull", *(spec.key for spec in PROPERTIES)})


class ResultsModel(QAbstractTableModel):
    """All records, one per row, in insertion order (sorting is the proxies' job).

    Signals
    -------
    records_changed
        After any addition, update or removal (the session autosaves on it).
    """

    records_changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._records: list[CrystalRecord] = []
        self._rows: dict[int, int] = {}

    # -- Qt model interface ------------------------------------------------------------------

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._records)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        record = self._records[index.row()]
        column = COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return column.display(record)
        if role == SORT_ROLE:
            return column.sort(record)
        if role == RECORD_ROLE:
            return record
        if role == Qt.ItemDataRole.ForegroundRole:
            if record.error or record.status == FAILED:
                return ERROR_BRUSH
            if record.is_candidate and not record.kept:
                return REJECTED_BRUSH
            if record.warnings and column.key == "status":
                return WARNING_BRUSH
            return None
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(record, column)
        if role == Qt.ItemDataRole.TextAlignmentRole and column.key in NUMERIC_COLUMNS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _tooltip(record: CrystalRecord, column: Column) -> str | None:
        lines = []
        if record.error:
            lines.append(record.error)
        if record.prediction_error:
            lines.append(f"Not predicted: {record.prediction_error}")
        lines += [f"⚠ {w}" for w in record.warnings]
        if record.is_candidate and not record.kept:
            lines.append(f"Rejected: {record.rejection()}")
        if column.key in ("e_above_hull", "decomposition") and record.stability.get("hull_error"):
            lines.append(f"No E_hull: {record.stability['hull_error']}")
        if column.tooltip and not lines:
            return column.tooltip
        return "\n".join(lines) or None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(COLUMNS):
            if role == Qt.ItemDataRole.DisplayRole:
                return COLUMNS[section].header
            if role == Qt.ItemDataRole.ToolTipRole:
                return COLUMNS[section].tooltip or COLUMNS[section].header
        return super().headerData(section, orientation, role)

    # -- store -------------------------------------------------------------------------------

    @property
    def records(self) -> list[CrystalRecord]:
        """A copy of the list of records, in row order."""
        return list(self._records)

    def record_at(self, row: int) -> CrystalRecord:
        return self._records[row]

    def row_of(self, record: CrystalRecord) -> int | None:
        return self._rows.get(record.uid)

    def find_source(self, source: str) -> CrystalRecord | None:
        """The library record read from ``source`` (path or ``path#block``), if any."""
        for record in self._records:
            if record.origin != GENERATED and record.source == source:
                return record
        return None

    def add(self, records: Iterable[CrystalRecord]) -> None:
        records = list(records)
        if not records:
            return
        first = len(self._records)
        self.beginInsertRows(QModelIndex(), first, first + len(records) - 1)
        for offset, record in enumerate(records):
            self._rows[record.uid] = first + offset
            self._records.append(record)
        self.endInsertRows()
        self.records_changed.emit()

    def refresh(self, records: Iterable[CrystalRecord]) -> None:
        """Tell the views that these records changed (in place)."""
        rows = [self._rows[r.uid] for r in records if r.uid in self._rows]
        if not rows:
            return
        self.dataChanged.emit(self.index(min(rows), 0), self.index(max(rows), len(COLUMNS) - 1))
        self.records_changed.emit()

    def remove(self, records: Iterable[CrystalRecord]) -> None:
        doomed = {r.uid for r in records}
        if not doomed & self._rows.keys():
            return
        self.beginResetModel()
        self._records = [r for r in self._records if r.uid not in doomed]
        self._rows = {r.uid: i for i, r in enumerate(self._records)}
        self.endResetModel()
        self.records_changed.emit()

    def count(self, origin: str | None = None) -> int:
        return len(self._records) if origin is None else sum(r.origin == origin for r in self._records)
