"""Models dialog: each shipped model's validation MAE and parity plot, from the manifest's evaluation records."""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QHBoxLayout, QListWidget, QVBoxLayout, QWidget

from app.ui.plots.canvas import PlotWidget

#: Shown for models whose manifest entry holds no ``metrics.parity_sample`` (predicted vs true pairs of
#: validation rows, written by ``crystal-designer evaluate NAME --record``).
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


def parity_targets(sample: object) -> list[str]:
    """Targets of a manifest parity sample with equally long, non-empty, finite true/predicted lists."""
    if not isinstance(sample, dict):
        return []
    targets = []
    for key, pairs in sample.items():
        if not isinstance(pairs, dict):
            continue
        true, predicted = pairs.get("true"), pairs.get("predicted")
        if isinstance(true, list) and isinstance(predicted, list) and true and len(true) == len(predicted) \
                and np.isfinite(np.asarray(true + predicted, dtype=float)).all():
            targets.append(str(key))
    return targets


class ParityPlot(PlotWidget):
    """Predicted vs true on validation rows, one panel per target."""

    def __init__(self, parent=None) -> None:
        super().__init__("Model parity", parent)

    def draw(self, name: str, entry: dict) -> None:
        """Draw model ``name``'s parity sample, one panel per target, or say that it has none."""
        metrics = entry.get("metrics") or {}
        sample = metrics.get("parity_sample") or {}
        units = entry.get("units") or {}
        self.figure.clear()
        self.table = {"target": [], "true": [], "predicted": []}
        targets = parity_targets(sample)
        columns = min(len(targets), 3)
        rows = -(-len(targets) // columns) if targets else 1
        for index, key in enumerate(targets):
            true = np.asarray(sample[key]["true"], dtype=float)
            predicted = np.asarray(sample[key]["predicted"], dtype=float)
            axes = self.figure.add_subplot(rows, columns, index + 1)
            axes.scatter(true, predicted, s=7, alpha=0.45, color="#3b75af", edgecolors="none")
            low = float(min(true.min(), predicted.min()))
            high = float(max(true.max(), predicted.max()))
            pad = 0.03 * (high - low or 1.0)
            axes.plot([low - pad, high + pad], [low - pad, high + pad], color="black", linewidth=0.8, label="y = x")
            unit = "" if units.get(key, "") in ("", "1") else units[key]
            # The MAE over every validation row (stored with the sample); the sample's own MAE otherwise.
            mae = sample[key].get("mae")
            count = sample[key].get("count")
            if not isinstance(mae, (int, float)):
                mae, count = float(np.mean(np.abs(predicted - true))), len(true)
            shown = f"{len(true)} of {count:,} shown" if isinstance(count, int) and count > len(true) \
                else f"n = {len(true)}"
            axes.set_title(f"{key}\nMAE {mae:.3g} {unit} ({shown})".replace("  ", " "), fontsize="small")
            axes.set_xlabel(f"true {unit}".strip(), fontsize="small")
            axes.set_ylabel(f"predicted {unit}".strip(), fontsize="small")
            axes.set_xlim(low - pad, high + pad)
            axes.set_ylim(low - pad, high + pad)
            axes.set_aspect("equal", adjustable="box")
            axes.tick_params(labelsize="x-small")
            self.table["target"] += [key] * len(true)
            self.table["true"] += true.tolist()
            self.table["predicted"] += predicted.tolist()
        if targets:
            self.figure.suptitle(f"{name}: validation parity", fontsize="medium")
            command = metrics.get("parity_sample_command")
            self.show_message(mae_text(entry) + (f"\nparity sample recorded by: {command}" if command else ""))
        else:
            self.show_message(mae_text(entry) + "\n" + NO_PARITY.format(name=name))
            self.figure.text(0.5, 0.5, NO_PARITY.format(name=name), ha="center", va="center", wrap=True)
        self.canvas.draw_idle()


class ModelsDialog(QWidget):
    """The models of ``models/manifest.json``: pick one to see its MAE and parity plot."""

    def __init__(self, manifest: dict, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.rows = model_rows(manifest)
        self.list = QListWidget()
        for name, entry in self.rows:
            # Models with a recorded parity sample are marked, so they can be found in a long list.
            has_sample = bool(parity_targets((entry.get("metrics") or {}).get("parity_sample")))
            self.list.addItem(f"{name}  ◆" if has_sample else name)
        self.list.setToolTip("◆: a validation parity sample is recorded")
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


