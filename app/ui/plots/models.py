"""Models dialog: each shipped model's validation MAE and parity plot, from the manifest's evaluation records."""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QHBoxLayout, QListWidget, QVBoxLayout, QWidget

from app.ui.plots.canvas import PlotWidget

#: Shown for models whose manifest entry holds no ``metrics.parity_sample`` (predicted vs true pairs of
#: validation rows): the evaluation commands have recorded MAEs only so far.
NO_PARITY = "{name}: no parity sample recorded (the manifest holds its validation metrics only)."


def model_rows(manifest: dict) -> list[tuple[str, dict]]:
    """(name, entry) of every model with validation metrics, sorted by name."""
    models = manifest.get("models", manifest)
    return sorted((name, entry) for name, entry in models.items()
                  if isinstance(entry, dict) and isinstance(entry.get("metrics"), dict))


def mae_text(entry: dict) -> str:
    """The validation MAE(s) of a model entry, with units, one per line."""
    metrics = entry.get("metrics") or {}
    units = entry.get("units") or {}
    lines = []
    for key, value in (metrics.get("validation_mae") or {}).items():
        if isinstance(value, (int, float)):
            lines.append(f"MAE {key}: {value:.4g} {units.get(key, '')}".rstrip())
    for key, value in metrics.items():
        # Models without per-target MAEs (generator networks, indexes, the latent map): their own numbers.
        if key not in ("validation_mae", "validation_count") and isinstance(value, (int, float)) \
                and not isinstance(value, bool):
            lines.append(f"{key}: {value:.4g}")
    if isinstance(metrics.get("validation_count"), int):
        lines.append(f"validation rows: {metrics['validation_count']:,}")
    return "\n".join(dict.fromkeys(lines)) or "no validation metrics recorded"


class ParityPlot(PlotWidget):
    """Predicted vs true on validation rows, one panel per target."""

    def __init__(self, parent=None) -> None:
        super().__init__("Model parity", parent)

    def draw(self, name: str, entry: dict) -> None:
        sample = (entry.get("metrics") or {}).get("parity_sample") or {}
        units = entry.get("units") or {}
        self.figure.clear()
        self.table = {"target": [], "true": [], "predicted": []}
        targets = [k for k, v in sample.items() if isinstance(v, dict) and v.get("true")]
        for index, key in enumerate(targets):
            true = np.asarray(sample[key]["true"], dtype=float)
            predicted = np.asarray(sample[key]["predicted"], dtype=float)
            axes = self.figure.add_subplot(1, len(targets), index + 1)
            axes.scatter(true, predicted, s=6, alpha=0.5, color="#3b75af")
            low, high = float(np.nanmin([true.min(), predicted.min()])), float(np.nanmax([true.max(), predicted.max()]))
            axes.plot([low, high], [low, high], color="black", linewidth=0.8)
            mae = float(np.nanmean(np.abs(predicted - true)))
            unit = units.get(key, "")
            axes.set_title(f"{key}\nMAE {mae:.3g} {unit} (n = {len(true)})", fontsize="small")
            axes.set_xlabel(f"true {unit}".strip())
            axes.set_ylabel(f"predicted {unit}".strip())
            axes.set_aspect("equal", adjustable="datalim")
            self.table["target"] += [key] * len(true)
            self.table["true"] += true.tolist()
            self.table["predicted"] += predicted.tolist()
        self.show_message(mae_text(entry) if targets else mae_text(entry) + "\n" + NO_PARITY.format(name=name))
        if not targets:
            self.figure.text(0.5, 0.5, NO_PARITY.format(name=name), ha="center", wrap=True)
        self.canvas.draw_idle()


class ModelsDialog(QWidget):
    """The models of ``models/manifest.json``: pick one to see its MAE and parity plot."""

    def __init__(self, manifest: dict, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.rows = model_rows(manifest)
        self.list = QListWidget()
        self.list.addItems([name for name, _ in self.rows])
        self.list.setMaximumWidth(180)
        self.parity = ParityPlot()
        self.list.currentRowChanged.connect(self._show)
        layout = QHBoxLayout(self)
        side = QVBoxLayout()
        side.addWidget(self.list)
        layout.addLayout(side)
        layout.addWidget(self.parity, 1)
        self.resize(1000, 560)
        if self.rows:
            self.list.setCurrentRow(0)

    def _show(self, row: int) -> None:
        if 0 <= row < len(self.rows):
            self.parity.draw(*self.rows[row])


def open_models_dialog(parent=None) -> ModelsDialog:
    """Read the manifest (small JSON, no weights) and show the dialog."""
    from app.engine.core.registry import load_manifest

    dialog = ModelsDialog({"models": load_manifest()}, parent)
    dialog.show()
    return dialog


