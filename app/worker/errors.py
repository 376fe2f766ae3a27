"""Errors the worker client raises in the app, rebuilt from what the worker process sent."""

from __future__ import annotations

from app.engine.core import errors as engine_errors


class WorkerCrashedError(engine_errors.CrystalDesignerError):
    """The worker process died (killed, out of memory, crashed) while running the job."""


class WorkerJobError(engine_errors.CrystalDesignerError):
    """A job failed inside the worker for an unexpected reason (a bug; details in the log)."""


class WorkerStoppedError(engine_errors.CrystalDesignerError):
    """The worker was shut down (app closing) or gave up restarting."""


_ENGINE_ERRORS = {cls.__name__: cls for cls in (
    engine_errors.CrystalDesignerError, engine_errors.StructureReadError,
    engine_errors.ModelError, engine_errors.CancelledError,
)}


def rebuild_error(payload: dict) -> Exception:
    """The exception to raise in the app for an ``error`` reply ``{"type", "message"}``."""
    kind, message = payload.get("type", ""), payload.get("message", "")
    cls = _ENGINE_ERRORS.get(kind)
    if cls is not None:
        return cls(message)
    return WorkerJobError(f"Internal error in the worker ({kind}: {message}). Details are in the log.")


def describe_exit(exitcode: int | None) -> str:
    """Plain words for a worker's exit code, e.g. ``killed by signal 9 (SIGKILL)``."""
    import signal

    if exitcode is None:
        return "stopped responding"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        hint = " — often the system running out of memory" if name == "SIGKILL" else ""
        return f"was killed by signal {-exitcode} ({name}{hint})"
    return f"exited with code {exitcode}"
