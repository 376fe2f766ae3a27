"""The working session on disk: library files, their predictions, and kept candidates.

Stored as JSON in ``platformdirs.user_data_dir("crystal-designer")/session.json`` and rewritten
atomically (temporary file + ``os.replace``) after every change, so a killed app restarts with
what it showed. The content is plain data (no Qt, no pymatgen objects):

``library``
    One dict per library entry: ``source`` (path, ``path#block`` for one block of a CIF),
    ``path``, ``name``, ``formula``, ``space_group``, ``n_sites``, ``warnings``, ``error``,
    ``properties`` ({key: value or None} or None), ``prediction_error``.
``candidates``
    One dict per kept candidate: ``name``, ``cif`` (CIF text), ``formula``, ``space_group``,
    ``n_sites``, ``properties``, ``flags``, ``latent_distance``, ``base``, ``index``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from app.settings import APP_DIR_NAME, atomic_write_text

logger = logging.getLogger(__name__)

SESSION_FILE = "session.json"
SESSION_VERSION = 1


@dataclass
class SessionSnapshot:
    """What is saved: plain dicts, as described in the module docstring."""

    library: list[dict] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.library and not self.candidates


def session_path() -> Path:
    """Where the session file lives (resolved at call time, so tests can redirect it)."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_DIR_NAME)) / SESSION_FILE


def save_session(snapshot: SessionSnapshot, path: Path | None = None) -> bool:
    """Write the session atomically; returns False (and logs) when the disk refuses."""
    path = path or session_path()
    payload = {"version": SESSION_VERSION, "library": snapshot.library, "candidates": snapshot.candidates}
    try:
        atomic_write_text(path, json.dumps(payload, ensure_ascii=False, allow_nan=False, default=_plain))
        return True
    except (OSError, ValueError, TypeError) as error:
        logger.warning("The session could not be saved to %s: %s", path, error)
        return False


def _plain(value):
    """JSON fallback for numpy scalars that slip into property dicts."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_session(path: Path | None = None) -> SessionSnapshot | None:
    """Read the last session; None when there is none or it cannot be used (logged, never raises)."""
    path = path or session_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("The saved session %s cannot be read (%s); starting a new one.", path, error)
        try:
            os.replace(path, path.with_name(path.name + ".corrupt"))
        except OSError:
            pass
        return None
    if not isinstance(data, dict) or data.get("version") != SESSION_VERSION:
        logger.warning("The saved session %s has an unknown layout (version %r); starting a new one.",
                       path, data.get("version") if isinstance(data, dict) else None)
        return None
    library = [e for e in data.get("library") or [] if isinstance(e, dict) and isinstance(e.get("source"), str)]
    candidates = [c for c in data.get("candidates") or [] if isinstance(c, dict) and isinstance(c.get("cif"), str)]
    return SessionSnapshot(library, candidates)
