"""Entry script of the frozen (PyInstaller) Crystal Designer executables.

It calls :func:`app.cli.main`, whose first action is ``multiprocessing.freeze_support()``: the
GUI's worker is a *spawn* process, which in a frozen app re-runs this executable with
``--multiprocessing-fork`` arguments; freeze_support turns that run into the worker.

The windowed launchers (``crystal-designer-gui.exe`` on Windows, the executable inside
``Crystal Designer.app`` on macOS) are started by the desktop with no arguments or with only file
paths (file association, drag onto the icon); those runs open the window, with the files. Every
other run is the plain command line (``crystal-designer predict …``, ``--self-test``, …).
"""

from __future__ import annotations

import os
import sys

GUI_LAUNCHER_NAME = "crystal-designer-gui"


def _is_gui_launcher() -> bool:
    executable = os.path.basename(sys.executable).lower()
    if executable.endswith(".exe"):
        executable = executable[:-4]
    return executable == GUI_LAUNCHER_NAME or (sys.platform == "darwin" and ".app/Contents/MacOS/" in sys.executable)


def launcher_argv(argv: list[str], commands: set[str]) -> list[str]:
    """Arguments for ``app.cli.main``: desktop launches (nothing, or only paths) open the window."""
    argv = [a for a in argv if not a.startswith("-psn_")]  # old macOS Finder process serial number
    if not argv:
        return ["gui"]
    if argv[0] not in commands and not argv[0].startswith("-"):
        return ["gui", "--open", *argv]
    return argv


def run() -> int:
    from app.cli import build_parser, main

    argv = sys.argv[1:]
    if _is_gui_launcher() and not any(a.startswith("--multiprocessing") for a in argv):
        subparsers = next(a for a in build_parser()._actions if a.dest == "command")
        argv = launcher_argv(argv, set(subparsers.choices))
    return main(argv)


if __name__ == "__main__":
    sys.exit(run())
