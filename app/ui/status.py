"""Status bar: device in use, model versions, worker state."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QStatusBar

DEVICE_NAMES = {"cuda": "CUDA", "mps": "MPS", "cpu": "CPU"}
STATE_COLOURS = {"idle": "#2e7d32", "busy": "#1f5fa0", "starting": "#a05a00", "restarting": "#c81e1e",
                 "stopped": "#c81e1e"}


class AppStatusBar(QStatusBar):
    """Permanent labels on the right; transient messages on the left."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.device_label = QLabel("Device: —")
        self.models_label = QLabel("Models: loading…")
        self.worker_label = QLabel("Worker: starting")
        for label in (self.device_label, self.models_label, self.worker_label):
            self.addPermanentWidget(label)

    def set_models(self, info: dict) -> None:
        """Show what ``jobs.load_models`` reported."""
        device = str(info.get("device") or "?")
        self.device_label.setText(f"Device: {DEVICE_NAMES.get(device.split(':')[0], device)}")
        versions = info.get("versions") or {}
        problems = [p for p in (info.get("predictor_error"), info.get("generator_error")) if p]
        if not versions:
            text = "Models: none"
        else:
            created = sorted({v.split()[0] for v in versions.values()})
            text = f"Models: {len(versions)} ({', '.join(created)})"
        if info.get("generator_error") and not info.get("predictor_error"):
            text += ", no generator"
        self.models_label.setText(text)
        tip = "\n".join(f"{name}: {version}" for name, version in sorted(versions.items()))
        self.models_label.setToolTip("\n".join(filter(None, [tip, *problems])))

    def set_worker_state(self, state: str) -> None:
        colour = STATE_COLOURS.get(state, "#333333")
        self.worker_label.setText(f"Worker: {state}")
        self.worker_label.setStyleSheet(f"color: {colour};")
