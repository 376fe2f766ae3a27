"""Menus and toolbar, built from a table of actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu, QToolBar


@dataclass(frozen=True)
class ActionSpec:
    """One menu entry: ``key`` names the handler, ``menu`` the menu it goes in."""

    key: str
    text: str
    menu: str
    shortcut: QKeySequence.StandardKey | str | None = None
    toolbar: bool = False
    tip: str = ""


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("open_files", "&Open files…", "&File", QKeySequence.StandardKey.Open, True,
               "Open CIF, POSCAR and other crystal files"),
    ActionSpec("open_folder", "Open &folder…", "&File", "Ctrl+Shift+O", True, "Open every crystal file in a folder"),
    ActionSpec("export", "&Export…", "&File", "Ctrl+E", True,
               "Export the selected rows (or all rows shown) as CIFs with a CSV/JSON summary"),
    ActionSpec("quit", "&Quit", "&File", QKeySequence.StandardKey.Quit),
    ActionSpec("generate", "&Generate", "&Generate", "Ctrl+G", True, "Generate candidates around the base"),
    ActionSpec("cancel", "&Cancel generation", "&Generate", "Ctrl+.", True, "Stop the running generation"),
    ActionSpec("reset_layout", "&Reset layout", "&View"),
)


def build_actions(window: QMainWindow, handlers: dict[str, Callable[[], object]]) -> tuple[dict[str, QAction],
                                                                                           dict[str, QMenu], QToolBar]:
    """Create the menus, the toolbar and one ``QAction`` per :data:`ACTIONS` entry.

    Returns
    -------
    actions : dict
        ``{key: QAction}``.
    menus : dict
        ``{menu title: QMenu}`` (the window adds dynamic entries, e.g. recent files).
    toolbar : QToolBar
    """
    menus: dict[str, QMenu] = {}
    actions: dict[str, QAction] = {}
    toolbar = QToolBar("Main toolbar", window)
    toolbar.setObjectName("main_toolbar")
    window.addToolBar(toolbar)
    for spec in ACTIONS:
        menu = menus.get(spec.menu)
        if menu is None:
            menu = menus[spec.menu] = window.menuBar().addMenu(spec.menu)
        action = QAction(spec.text, window)
        if spec.shortcut is not None:
            action.setShortcut(QKeySequence(spec.shortcut))
        if spec.tip:
            action.setStatusTip(spec.tip)
            action.setToolTip(spec.tip)
        action.triggered.connect(lambda _checked=False, handler=handlers[spec.key]: handler())
        menu.addAction(action)
        if spec.toolbar:
            toolbar.addAction(action)
        actions[spec.key] = action
    return actions, menus, toolbar
