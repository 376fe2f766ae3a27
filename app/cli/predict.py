"""``crystal-designer predict``: the eight properties of crystal files."""

from __future__ import annotations

import logging
import sys

from app.cli.output import add_precision_argument, report_error, write_records

logger = logging.getLogger("crystal_designer")


def add_parser(commands, device_choices) -> None:
    predict = commands.add_parser("predict", help="predict the eight properties of crystal files")
    predict.add_argument("paths", nargs="+", help="CIF/POSCAR/... files or folders")
    predict.add_argument("--format", choices=("json", "csv"), default="json")
    predict.add_argument("--device", choices=device_choices, default="auto")
    predict.add_argument("--model", choices=("cgcnn", "pointnet"), default="cgcnn",
                         help="property predictor: the CGCNN graph models or the PointNet point-cloud model")
    predict.add_argument("--workers", type=int, default=None, help="processes reading files (default: cores)")
    predict.add_argument("--max-file-mb", type=float, default=20.0, help="refuse larger files (MB)")
    predict.add_argument("--max-sites", type=int, default=5000, help="refuse structures with more sites")
    add_precision_argument(predict)
    predict.add_argument("--relax", action="store_true",
                         help="relax each structure with CHGNet first and report the relaxed values")
    predict.add_argument("--relax-fmax", type=float, default=0.1, help="--relax: force threshold (eV/Å)")
    predict.add_argument("--relax-steps", type=int, default=300, help="--relax: step cap per structure")
    predict.set_defaults(handler=run)


def run(args) -> int:
    from app.engine.core.errors import CrystalDesignerError
    from app.engine.io.crystal_io import ReadLimits
    from app.engine.properties.predict_files import predict_files
    from app.engine.properties.predictor import PropertyPredictor

    limits = ReadLimits(max_file_bytes=int(args.max_file_mb * 1_000_000), max_sites=args.max_sites)
    try:
        # A loader, not a predictor: the models load while the file readers have started.
        if getattr(args, "relax", False):
            from app.engine.properties.relaxed_predictions import predict_relaxed_files

            records = predict_relaxed_files(args.paths, PropertyPredictor(device=args.device), limits=limits,
                                            fmax=args.relax_fmax, max_steps=args.relax_steps, device=args.device)
            with_hull_fields(records)
        elif args.model == "pointnet":
            from app.engine.properties.pointnet_predictor import PointNetPredictor

            # Hull fields per finished batch, in the file readers while the models run.
            records = predict_files(args.paths, lambda: PointNetPredictor(device=args.device), limits=limits,
                                    workers=args.workers, featurise=PointNetPredictor.featurise,
                                    finish_records=with_hull_fields)
        else:
            records = predict_files(args.paths, lambda: PropertyPredictor(device=args.device),
                                    limits=limits, workers=args.workers, finish_records=with_hull_fields)
    except CrystalDesignerError as error:
        report_error(error)
        return 2
    write_records(records, args.format, sys.stdout, precision=args.precision)
    failed = [r for r in records if r["error"]]
    for record in failed:
        logger.warning("%s: %s", record["source"], record["error"])
    if not records:
        report_error("no crystal files found in the given paths.")
        return 1
    return 1 if failed else 0


#: This process's reference hull and the reason when there is none, keyed by the hull file's
#: path and modification time so that another models folder or a rebuilt hull is loaded afresh.
_HULL: dict = {}


def with_hull_fields(records: list[dict]) -> list[dict]:
    """``records`` with ``e_above_hull``, ``decomposition`` and ``hull_error`` (the reason when
    there is no hull). Module-level, so the file readers of ``predict_files`` can run it; each
    process loads the reference hull once and keeps it, so batch after batch shares one hull and
    its per-system facet cache."""
    from app.engine.core.errors import ModelError
    from app.engine.core.paths import models_dir
    from app.engine.stability.hull import HULL_FILE, ReferenceHull, add_hull_fields

    path = models_dir() / HULL_FILE
    key = (str(path), path.stat().st_mtime_ns if path.exists() else None)
    if key not in _HULL:
        try:
            loaded = (ReferenceHull.load(), None)
        except ModelError as error:
            loaded = (None, str(error))
        _HULL.clear()
        _HULL[key] = loaded
    add_hull_fields(records, *_HULL[key])
    return records
