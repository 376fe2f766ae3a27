"""``crystal-designer predict``: the eight properties of crystal files."""

from __future__ import annotations

import logging
import sys

from app.cli.output import report_error, write_records

logger = logging.getLogger("crystal_designer")


def add_parser(commands, device_choices) -> None:
    predict = commands.add_parser("predict", help="predict the eight properties of crystal files")
    predict.add_argument("paths", nargs="+", help="CIF/POSCAR/... files or folders")
    predict.add_argument("--format", choices=("json", "csv"), default="json")
    predict.add_argument("--device", choices=device_choices, default="auto")
    predict.add_argument("--workers", type=int, default=None, help="processes reading files (default: cores)")
    predict.add_argument("--max-file-mb", type=float, default=20.0, help="refuse larger files (MB)")
    predict.add_argument("--max-sites", type=int, default=5000, help="refuse structures with more sites")
    predict.set_defaults(handler=run)


def run(args) -> int:
    from app.engine.core.errors import CrystalDesignerError
    from app.engine.io.crystal_io import ReadLimits
    from app.engine.properties.predict_files import predict_files
    from app.engine.properties.predictor import PropertyPredictor

    limits = ReadLimits(max_file_bytes=int(args.max_file_mb * 1_000_000), max_sites=args.max_sites)
    try:
        predictor = PropertyPredictor(device=args.device)
    except CrystalDesignerError as error:
        report_error(error)
        return 2
    records = predict_files(args.paths, predictor, limits=limits, workers=args.workers)
    write_records(records, args.format, sys.stdout)
    failed = [r for r in records if r["error"]]
    for record in failed:
        logger.warning("%s: %s", record["source"], record["error"])
    if not records:
        report_error("no crystal files found in the given paths.")
        return 1
    return 1 if failed else 0
