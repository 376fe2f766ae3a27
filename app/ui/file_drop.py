"""Which dragged items are crystal files or folders we can open."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData


def local_paths(mime: QMimeData | None) -> list[str]:
    """Local files and folders among the dragged URLs (web links and the like are ignored)."""
    if mime is None or not mime.hasUrls():
        return []
    paths = []
    for url in mime.urls():
        if url.isLocalFile():
            path = url.toLocalFile()
            if path and Path(path).exists():
                paths.append(path)
    return paths
