"""Sorting and filtering of the results table: property windows, text, origin, kept only."""

from __future__ import annotations

from PySide6.QtCore import QSortFilterProxyModel

from app.engine.generation.settings import Windows, in_windows
from app.ui.records import GENERATED, CrystalRecord
from app.ui.results_model import SORT_ROLE


class ResultsFilter(QSortFilterProxyModel):
    """Proxy over :class:`~app.ui.results_model.ResultsModel` rows.

    Sorting uses :data:`SORT_ROLE` values, which Qt compares natively (numbers as numbers,
    missing values last), so sorting large tables stays fast.
    """

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)
        self._windows: Windows = {}
        self._text = ""
        self._origin: str | None = None
        self._kept_only = False
        self._max_e_above_hull: float | None = None

    @property
    def windows(self) -> Windows:
        return dict(self._windows)

    def set_windows(self, windows: Windows) -> None:
        """Show only rows whose properties are inside these ``{key: (min, max)}`` windows."""
        windows = {k: v for k, v in windows.items() if v != (None, None)}
        if windows != self._windows:
            self._windows = windows
            self.invalidateRowsFilter()

    def set_text(self, text: str) -> None:
        """Show only rows whose name or formula contains ``text`` (case-insensitive)."""
        text = text.strip().lower()
        if text != self._text:
            self._text = text
            self.invalidateRowsFilter()

    def set_origin(self, origin: str | None) -> None:
        """``library``, ``generated`` or None (both)."""
        if origin != self._origin:
            self._origin = origin
            self.invalidateRowsFilter()

    def set_kept_only(self, kept_only: bool) -> None:
        """Hide rejected candidates."""
        if kept_only != self._kept_only:
            self._kept_only = kept_only
            self.invalidateRowsFilter()

    def set_max_e_above_hull(self, value: float | None) -> None:
        """Show only candidates at most ``value`` eV/atom above the hull (None: no limit; library rows stay)."""
        if value != self._max_e_above_hull:
            self._max_e_above_hull = value
            self.invalidateRowsFilter()

    def accepts(self, record: CrystalRecord) -> bool:
        if self._origin is not None and record.origin != self._origin:
            return False
        if self._kept_only and record.origin == GENERATED and not record.kept:
            return False
        if self._max_e_above_hull is not None and record.origin == GENERATED and not (
                record.e_above_hull is not None and record.e_above_hull <= self._max_e_above_hull):
            return False
        if self._text and self._text not in record.name.lower() and self._text not in (record.formula or "").lower():
            return False
        # The generator's funnel uses the same test (bounds inclusive, unknown values fail).
        return in_windows(record.properties, self._windows)

    def filterAcceptsRow(self, source_row, source_parent) -> bool:  # noqa: N802
        return self.accepts(self.sourceModel().record_at(source_row))

    def record_at(self, proxy_row: int) -> CrystalRecord:
        return self.sourceModel().record_at(self.mapToSource(self.index(proxy_row, 0)).row())

    def visible_records(self) -> list[CrystalRecord]:
        """Records of all rows passing the filter, in the displayed order."""
        return [self.record_at(row) for row in range(self.rowCount())]
