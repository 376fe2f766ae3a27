"""The Compositions panel: DING targets → generate compositions → table → make structures → Results.

Generation and the structure step run in the worker process (``jobs.generate_compositions``,
``jobs.composition_structures``); the structures arrive as library entries with their eight
predicted properties, so they show in Results and can be generator bases.
"""

from __future__ import annotations

import asyncio
import logging

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel,
                               QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app.engine.core.errors import CancelledError, CrystalDesignerError
from app.ui import records as rec

logger = logging.getLogger(__name__)

#: (key, label, unit, default, minimum, maximum) of each DING target.
TARGETS = (
    ("formation_enthalpy", "Formation enthalpy", "eV/atom", -2.0, -5.0, 5.0),
    ("energy_per_atom", "Energy per atom", "eV/atom", -6.0, -15.0, 0.0),
    ("volume_per_atom", "Volume per atom", "Å³/atom", 20.0, 2.0, 100.0),
)
COLUMNS = ("Formula", "ΔH (eV/atom)", "E (eV/atom)", "V (Å³/atom)", "Charge balanced", "New")


class CompositionsPanel(QWidget):
    """Targets, a Generate button, the table of generated compositions and "Make structures".

    Parameters
    ----------
    controller : DesignController
        Its worker client runs the jobs; its results model receives the structures.

    Signals
    -------
    generated(dict)
        The job's result (candidates, counts, warnings) once shown.
    structures_made(list)
        The library records added by "Make structures".
    """

    generated = Signal(dict)
    structures_made = Signal(list)

    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self._job = None
        self.candidates: list[dict] = []
        self.use: dict[str, QCheckBox] = {}
        self.values: dict[str, QDoubleSpinBox] = {}
        form = QFormLayout()
        for key, label, unit, default, low, high in TARGETS:
            row = QHBoxLayout()
            self.use[key] = QCheckBox(label)
            self.use[key].setChecked(key == "formation_enthalpy")
            self.values[key] = QDoubleSpinBox(minimum=low, maximum=high, value=default, singleStep=0.1, decimals=2,
                                              suffix=f" {unit}")
            self.values[key].setObjectName(f"target_{key}")
            row.addWidget(self.use[key])
            row.addWidget(self.values[key])
            form.addRow(row)
        self.samples = QSpinBox(minimum=1, maximum=100_000, value=200)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        form.addRow("Samples", self.samples)
        form.addRow("Seed", self.seed)
        self.generate_button = QPushButton("Generate compositions")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.structures_button = QPushButton("Make structures")
        self.structures_button.setEnabled(False)
        self.status = QLabel("Set targets and generate.")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(True)
        buttons = QHBoxLayout()
        for button in (self.generate_button, self.cancel_button, self.structures_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        self.generate_button.clicked.connect(lambda: asyncio.ensure_future(self.generate()))
        self.cancel_button.clicked.connect(self.cancel)
        self.structures_button.clicked.connect(lambda: asyncio.ensure_future(self.make_structures()))
        self.table.itemSelectionChanged.connect(
            lambda: self.structures_button.setEnabled(bool(self.selected_formulas()) and self._job is None))

    def targets(self) -> dict[str, float]:
        """The checked targets with their values."""
        return {key: self.values[key].value() for key, *_ in TARGETS if self.use[key].isChecked()}

    def selected_formulas(self) -> list[str]:
        rows = sorted({index.row() for index in self.table.selectedIndexes()})
        return [self.table.item(row, 0).text() for row in rows]

    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def _busy(self, busy: bool) -> None:
        self.generate_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.structures_button.setEnabled(not busy and bool(self.selected_formulas()))

    async def generate(self) -> dict | None:
        """Run the generator in the worker and fill the table with the unique compositions."""
        from app.worker import jobs

        targets = self.targets()
        if not targets:
            self.status.setText("Check at least one target property.")
            return None
        self.status.setText("Generating…")
        self._busy(True)
        try:
            self._job = self.controller.client.submit(
                jobs.generate_compositions, targets=targets, n=self.samples.value(), seed=self.seed.value(),
                progress=lambda done, total, message: self.status.setText(f"Decoding {done}/{total}…"))
            result = await self._job
        except CancelledError:
            self.status.setText("Cancelled.")
            return None
        except CrystalDesignerError as error:
            self.status.setText(f"Generation failed: {error}")
            return None
        finally:
            self._job = None
            self._busy(False)
        self._show(result)
        self.generated.emit(result)
        return result

    def _show(self, result: dict) -> None:
        self.candidates = list(result["candidates"])
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.candidates))
        for row, candidate in enumerate(self.candidates):
            cells = (candidate["formula"], candidate["formation_enthalpy"], candidate["energy_per_atom"],
                     candidate["volume_per_atom"], "yes" if candidate["charge_balanced"] else "no",
                     "yes" if candidate["not_in_training"] else "known")
            for column, value in enumerate(cells):
                item = QTableWidgetItem()
                if isinstance(value, float):
                    item.setData(Qt.ItemDataRole.DisplayRole, round(value, 3))
                else:
                    item.setText(str(value))
                self.table.setItem(row, column, item)
        self.table.setSortingEnabled(True)
        counts = result["counts"]
        text = (f"{counts['samples']} samples → {counts['decoded']} decoded, {counts['unique']} unique, "
                f"{counts['not_in_training']} new, {counts['charge_balanced']} charge balanced.")
        self.status.setText(" ".join([text, *result.get("warnings", [])]))

    async def make_structures(self, formulas: list[str] | None = None) -> list:
        """Place the selected compositions into prototypes; the crystals join the library and Results."""
        from app.worker import jobs

        formulas = formulas or self.selected_formulas()
        if not formulas:
            return []
        self.status.setText(f"Making structures for {len(formulas)} composition(s)…")
        self._busy(True)
        try:
            self._job = self.controller.client.submit(jobs.composition_structures, formulas=formulas)
            entries = await self._job
        except CancelledError:
            self.status.setText("Cancelled.")
            return []
        except CrystalDesignerError as error:
            self.status.setText(f"Structures failed: {error}")
            return []
        finally:
            self._job = None
            self._busy(False)
        records = self._add_records(entries)
        await self.controller.refresh_models()  # DING and the hull may have loaded just now
        made = sum(1 for r in records if r.structure is not None)
        failed = [e["error"] for e in entries if e.get("error")]
        self.status.setText(f"{made} structure(s) added to the library." + (f" {' '.join(failed)}" if failed else ""))
        self.structures_made.emit(records)
        return records

    def _add_records(self, entries: list[dict]) -> list:
        model = self.controller.model
        records = []
        for entry in entries:
            existing = model.find_source(entry["source"])
            if existing is not None:  # making the same structures again replaces them
                model.remove([existing])
            record = rec.library_record(entry)
            records.append(record)
        model.add(records)
        for record, entry in zip(records, entries):
            if record.structure is not None:
                rec.apply_prediction(record, {"properties": entry.get("properties"),
                                              "error": entry.get("prediction_error"),
                                              "stability": entry.get("stability")})
        model.refresh(records)
        self.controller.structures_arrived.emit(records)
        return records
