"""Cooperative cancellation and progress reporting for long engine jobs."""

from __future__ import annotations

import threading
from typing import Protocol

from app.engine.core.errors import CancelledError


class ProgressCallback(Protocol):
    """Called as ``progress(done, total, message)`` while a job runs."""

    def __call__(self, done: int, total: int, message: str = "") -> None: ...


class CancelToken:
    """Set by the caller to ask a running job to stop at its next checkpoint (thread-safe)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("Cancelled by the user.")
