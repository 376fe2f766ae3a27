"""The application's log file, so that tracebacks of unexpected failures are kept, not printed.

The terminal shows warnings (``-v``: progress too); the file, in the platform's user log folder
(``~/.local/state/crystal-designer/log`` on Linux), also keeps INFO records, which is where
unexpected failures put their tracebacks. The window runs through the same command
(``crystal-designer gui``), and its worker's records are forwarded to it, so one file serves both.
"""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path

LOG_FILE_NAME = "crystal-designer.log"


def log_folder() -> Path:
    import platformdirs

    return Path(platformdirs.user_log_dir("crystal-designer", appauthor=False))


def add_log_file(max_bytes: int = 2_000_000) -> Path | None:
    """Log INFO and above to the user's log file; returns its path (None if it cannot be written).

    Handlers already on the root logger keep the level the root had, so the terminal shows no
    more than before.
    """
    root = logging.getLogger()
    terminal_level = root.level
    try:
        folder = log_folder()
        folder.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(folder / LOG_FILE_NAME, maxBytes=max_bytes, backupCount=2, encoding="utf-8")
    except OSError as error:  # a read-only home must not stop the command
        root.debug("No log file: %s", error)
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    for existing in root.handlers:
        if existing.level == logging.NOTSET:
            existing.setLevel(terminal_level)
    root.addHandler(handler)
    root.setLevel(min(terminal_level, logging.INFO))
    return folder / LOG_FILE_NAME
