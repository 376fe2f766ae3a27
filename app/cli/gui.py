"""``crystal-designer gui``: the desktop window (Qt, pyvista and qasync are imported only here)."""

from __future__ import annotations


def add_parser(commands, device_choices) -> None:
    gui = commands.add_parser("gui", help="open the desktop window")
    gui.add_argument("--open", nargs="+", action="extend", metavar="PATH", default=[],
                     help="crystal files or folders to open (repeatable)")
    gui.add_argument("--screenshot", metavar="PNG", help="save the window once the files are predicted, then exit")
    gui.add_argument("--device", choices=device_choices, default=None,
                     help="device for this run only (the saved setting is unchanged)")
    gui.set_defaults(handler=run)


def run(args) -> int:
    from app.ui.application import run_gui

    return run_gui(open_paths=args.open, screenshot=args.screenshot, device=args.device)
