"""``crystal-designer``: the headless command line over the engine.

Each subcommand lives in its own module of this package, which registers its parser in
:data:`COMMAND_MODULES` order and imports the engine only inside its handler, so start-up
stays fast and ``gui`` is the only command that loads Qt.

Subcommands
-----------
predict PATH...      eight properties of each structure (JSON or CSV on stdout)
generate --base PATH new candidate crystals around a base (ICSG3D), filtered, as CIFs
compositions ...     DING: properties of formulas, compositions for targets, their structures
reconstruct PATH...  encode and decode crystals through the generator
train NAME           retrain a shipped model from the shared data
evaluate NAME        validation metrics of a shipped model
build-index          rebuild the training-set index used by the novelty filter
gui                  the desktop window
--self-test          check the installation end to end (see app.selftest) and exit
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from app import __version__

#: Modules of this package that register subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = ("predict", "generate", "compositions", "screen", "models", "gui")


def build_parser() -> argparse.ArgumentParser:
    from app.engine.core.devices import DEVICE_CHOICES

    parser = argparse.ArgumentParser(
        prog="crystal-designer",
        description="Crystal Designer: predict properties of crystals and generate new candidates.",
    )
    parser.add_argument("--version", action="version", version=f"crystal-designer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--self-test", action="store_true",
                        help="check the installation (models, prediction, generation, worker, 3-D rendering) and exit")
    # Not required by argparse so that --self-test works alone; main() asks for a command otherwise.
    commands = parser.add_subparsers(dest="command", required=False)
    for name in COMMAND_MODULES:
        importlib.import_module(f"app.cli.{name}").add_parser(commands, DEVICE_CHOICES)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The GUI's worker is a spawn process: in a frozen (PyInstaller) app the child runs this
    # executable again, and freeze_support() turns that run into the worker. No-op otherwise.
    import multiprocessing

    multiprocessing.freeze_support()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.self_test and args.command is None:
        parser.error("the following arguments are required: command")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from app.cli.logfile import add_log_file

    add_log_file()  # tracebacks of unexpected failures go there (and to the terminal with -v only)
    from app.engine.core.threads import configure_threads

    configure_threads()  # before torch starts its pools: one thread per core this process is given
    try:
        if args.self_test:
            from app.selftest import run_self_test

            return run_self_test()
        return args.handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
