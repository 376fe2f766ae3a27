"""``crystal-designer``: the headless command line over the engine.

Subcommands
-----------
predict PATH...      eight properties of each structure (JSON or CSV on stdout)
train NAME           retrain a shipped property model from the shared data
evaluate NAME        validation metrics of a shipped model
build-index          rebuild the training-set index used by the novelty filter
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from typing import Sequence

from app import __version__

logger = logging.getLogger("crystal_designer")


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_records(records: list[dict], fmt: str, stream) -> None:
    if fmt == "csv":
        keys = [k for k in records[0].keys()] if records else ["source", "formula", "error"]
        writer = csv.DictWriter(stream, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            row = dict(record)
            row["warnings"] = "; ".join(record.get("warnings") or [])
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    else:
        clean = [{k: _json_safe(v) for k, v in r.items()} for r in records]
        json.dump(clean, stream, indent=2, ensure_ascii=False)
        stream.write("\n")


def _command_predict(args) -> int:
    from app.engine.crystal_io import ReadLimits
    from app.engine.errors import CrystalDesignerError
    from app.engine.predict_files import predict_files
    from app.engine.predictor import PropertyPredictor

    limits = ReadLimits(max_file_bytes=int(args.max_file_mb * 1_000_000), max_sites=args.max_sites)
    try:
        predictor = PropertyPredictor(device=args.device)
    except CrystalDesignerError as error:
        print(f"crystal-designer: {error}", file=sys.stderr)
        return 2
    records = predict_files(args.paths, predictor, limits=limits, workers=args.workers)
    _write_records(records, args.format, sys.stdout)
    failed = [r for r in records if r["error"]]
    for record in failed:
        logger.warning("%s: %s", record["source"], record["error"])
    if not records:
        print("crystal-designer: no crystal files found in the given paths.", file=sys.stderr)
        return 1
    return 1 if failed else 0


def _command_train(args) -> int:
    from app.engine.training.train_property import train

    entry = train(args.name, epochs=args.epochs, fresh=args.fresh)
    json.dump(entry["metrics"], sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _command_evaluate(args) -> int:
    from app.engine.training.train_property import evaluate

    json.dump(evaluate(args.name), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _command_build_index(args) -> int:
    from app.engine.training.element_references import build_element_references
    from app.engine.training.training_index import build_training_index

    print(build_element_references())
    print(build_training_index())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from app.engine.devices import DEVICE_CHOICES

    parser = argparse.ArgumentParser(
        prog="crystal-designer",
        description="Crystal Designer: predict properties of crystals and generate new candidates.",
    )
    parser.add_argument("--version", action="version", version=f"crystal-designer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", help="predict the eight properties of crystal files")
    predict.add_argument("paths", nargs="+", help="CIF/POSCAR/... files or folders")
    predict.add_argument("--format", choices=("json", "csv"), default="json")
    predict.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    predict.add_argument("--workers", type=int, default=None, help="processes reading files (default: cores)")
    predict.add_argument("--max-file-mb", type=float, default=20.0, help="refuse larger files (MB)")
    predict.add_argument("--max-sites", type=int, default=5000, help="refuse structures with more sites")
    predict.set_defaults(handler=_command_predict)

    from app.engine.training.recipes import RECIPE_NAMES

    train = commands.add_parser("train", help="retrain a property model from ../shared/data (hours on CPU)")
    train.add_argument("name", choices=RECIPE_NAMES)
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--fresh", action="store_true", help="ignore the checkpoint instead of resuming")
    train.set_defaults(handler=_command_train)

    evaluate = commands.add_parser("evaluate", help="validation metrics of a shipped model")
    evaluate.add_argument("name", choices=RECIPE_NAMES)
    evaluate.set_defaults(handler=_command_evaluate)

    index = commands.add_parser("build-index", help="rebuild models/ training index and element references")
    index.set_defaults(handler=_command_build_index)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
