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
        """Show what the worker has loaded (``WorkerModels.describe``): loaded of shipped models.

        Models load on first use (PointNet, DING, the reference hull …), so the window calls
        this again after jobs that may load one.
        """
        device = str(info.get("device") or "?")
        self.device_label.setText(f"Device: {DEVICE_NAMES.get(device.split(':')[0], device)}")
        versions = info.get("versions") or {}
        shipped = list(info.get("shipped") or [])
        problems = [p for p in (info.get("predictor_error"), info.get("generator_error"), info.get("hull_error")) if p]
        if not versions:
            text = "Models: none loaded"
        elif shipped:
            text = f"Models: {len(versions)} of {len(shipped)} loaded"
        else:
            text = f"Models: {len(versions)} loaded"
        if info.get("generator_error") and not info.get("predictor_error"):
            text += ", no generator"
        self.models_label.setText(text)
        lines = [f"{name}: {version}" for name, version in sorted(versions.items())]
        waiting = [name for name in shipped if name not in versions]
        if waiting:
            lines.append("Loaded when first used: " + ", ".join(waiting))
        self.models_label.setToolTip("\n".join(lines + problems))

    def set_worker_state(self, state: str) -> None:
        colour = STATE_COLOURS.get(state, "#333333")
        self.worker_label.setText(f"Worker: {state}")
        self.worker_label.setStyleSheet(f"color: {colour};")
