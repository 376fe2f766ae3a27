"""A matplotlib figure in a Qt widget, with Export figure (PNG/SVG) and Export data (CSV) buttons."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("QtAgg")  # before pyplot or any backend import; the window is Qt

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg, NavigationToolbar2QT  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget  # noqa: E402


class PlotWidget(QWidget):
    """A figure with its data table.

    Subclasses draw into ``self.figure`` and set ``self.table`` (column name → list of values,
    all columns of equal length) to what the figure shows, for :meth:`export_csv`.
    """

    def __init__(self, title: str, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.figure = Figure(figsize=(7.0, 4.5), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.table: dict[str, list] = {}
        self.message = QLabel("")
        self.message.setWordWrap(True)
        figure_button = QPushButton("Export figure…")
        figure_button.setToolTip("Save as PNG or SVG")
        figure_button.clicked.connect(self._export_figure_dialog)
        data_button = QPushButton("Export data…")
        data_button.setToolTip("Save the plotted values as CSV")
        data_button.clicked.connect(self._export_csv_dialog)
        buttons = QHBoxLayout()
        buttons.addWidget(NavigationToolbar2QT(self.canvas, self))
        buttons.addStretch(1)
        buttons.addWidget(figure_button)
        buttons.addWidget(data_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        self.resize(760, 520)

    @property
    def has_data(self) -> bool:
        """True when the figure shows data (some column has values)."""
        return any(len(values) for values in self.table.values())

    def export_figure(self, path: str | Path) -> Path:
        """Write the figure; the format follows the suffix (``.png``, ``.svg``)."""
        path = Path(path)
        self.figure.savefig(path, dpi=200 if path.suffix.lower() == ".png" else None)
        return path

    def export_csv(self, path: str | Path) -> Path:
        """Write :attr:`table` as CSV (one header row)."""
        path = Path(path)
        columns = list(self.table)
        with path.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(columns)
            for row in zip(*(self.table[c] for c in columns)):
                writer.writerow(["" if v is None else v for v in row])
        return path

    def _export_figure_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export figure", f"{self._stem()}.png",
                                              "PNG image (*.png);;SVG image (*.svg)")
        if path:
            self.export_figure(path if Path(path).suffix else path + ".png")

    def _export_csv_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export data", f"{self._stem()}.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path if path.lower().endswith(".csv") else path + ".csv")

    def _stem(self) -> str:
        return "".join(ch if ch.isalnum() else "_" for ch in self.windowTitle()).strip("_").lower() or "plot"

    def show_message(self, text: str) -> None:
        """A note under the figure (e.g. why some rows are missing)."""
        self.message.setText(text)
