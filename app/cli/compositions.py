"""``crystal-designer compositions``: DING composition predictor and generator, and composition → structure.

compositions predict FORMULA... [--file CSV]   the three DING properties of each formula
compositions generate --target KEY=V ... --n N  new compositions for target properties, flagged
compositions structures FORMULA [--out DIR]     crystals of a composition from prototypes, eight properties
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from app.cli.output import json_safe, report_error, write_records

PROPERTY_KEYS = ("formation_enthalpy", "energy_per_atom", "volume_per_atom")


def add_sampling_arguments(parser) -> None:
    """``--temperature``, ``--latent-scale``, ``--top-p``: how the DING decoder is sampled.

    Unset options keep the generator's defaults (``compositions.runtime.DEFAULT_*``); they are not
    read here so that building the parser does not import the engine.
    """
    parser.add_argument("--temperature", type=float, default=None,
                        help="DING: softmax temperature of each element's count draw (0: the most likely count, "
                             "as the paper; default: the generator's, see models/ding_cvae.md)")
    parser.add_argument("--latent-scale", type=float, default=None,
                        help="DING: spread s of the latent draws z ~ N(0, s²I) (default: the generator's)")
    parser.add_argument("--top-p", type=float, default=None,
                        help="DING: draw each count among the most likely counts holding this probability "
                             "(default: the generator's)")


def sampling_options(args) -> dict:
    """The generator's sampling keyword arguments that ``add_sampling_arguments`` options set."""
    options = {"temperature": args.temperature, "latent_scale": args.latent_scale, "top_p": args.top_p}
    return {key: value for key, value in options.items() if value is not None}


def add_parser(commands, device_choices) -> None:
    group = commands.add_parser("compositions", help="DING: properties and generation of compositions")
    sub = group.add_subparsers(dest="compositions_command", required=True)

    predict = sub.add_parser("predict", help="formation enthalpy, energy and volume per atom of formulas")
    predict.add_argument("formulas", nargs="*", help="formulas such as Al2O3 NaCl")
    predict.add_argument("--file", type=Path, help="CSV with a 'formula' column (or formulas in the first column)")
    predict.add_argument("--format", choices=("json", "csv"), default="json")
    predict.set_defaults(handler=run_predict)

    generate = sub.add_parser("generate", help="compositions for target properties (DING CVAE)")
    generate.add_argument("--target", action="append", default=[], metavar="PROPERTY=VALUE",
                          help=f"one of {', '.join(PROPERTY_KEYS)} (eV/atom, eV/atom, Å³/atom); repeatable")
    generate.add_argument("--n", type=int, default=100, help="samples to decode")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--all", action="store_true", help="list repeats too (default: unique compositions)")
    add_sampling_arguments(generate)
    generate.add_argument("--format", choices=("json", "csv"), default="json")
    generate.set_defaults(handler=run_generate)

    structures = sub.add_parser("structures", help="crystal structures of a composition from known prototypes")
    structures.add_argument("formula")
    structures.add_argument("--limit", type=int, default=5, help="prototypes to use at most")
    structures.add_argument("--out", type=Path, help="folder for the CIFs")
    structures.add_argument("--device", choices=device_choices, default="auto")
    structures.add_argument("--format", choices=("json", "csv"), default="json")
    structures.set_defaults(handler=run_structures)


def _formulas_from_file(path: Path) -> list[str]:
    from app.engine.core.errors import CrystalDesignerError

    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise CrystalDesignerError(f"{path} cannot be read: {error}") from error
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    column = header.index("formula") if "formula" in header else 0
    body = rows[1:] if "formula" in header else rows
    return [row[column].strip() for row in body if len(row) > column and row[column].strip()]


def run_predict(args) -> int:
    from app.engine.compositions.runtime import CompositionPredictor
    from app.engine.core.errors import CrystalDesignerError

    try:
        formulas = list(args.formulas) + (_formulas_from_file(args.file) if args.file else [])
        if not formulas:
            report_error("give formulas or --file CSV.")
            return 2
        records = CompositionPredictor().predict(formulas)
    except CrystalDesignerError as error:
        report_error(error)
        return 2
    records = [{"formula_input": r["formula_input"], "formula": r["formula"], **{k: r[k] for k in PROPERTY_KEYS},
                "warnings": r.get("warnings", []), "error": r.get("error")} for r in records]
    write_records(records, args.format, sys.stdout)
    return 1 if any(r["error"] for r in records) else 0


def run_generate(args) -> int:
    from app.engine.compositions.runtime import CompositionGenerator, parse_targets
    from app.engine.core.errors import CrystalDesignerError

    try:
        targets = parse_targets(args.target)
        result = CompositionGenerator(**sampling_options(args)).generate(targets, n=args.n, seed=args.seed)
    except CrystalDesignerError as error:
        report_error(error)
        return 2
    for warning in result.warnings:
        print(f"crystal-designer: warning: {warning}", file=sys.stderr)
    candidates = [c.as_record() for c in result.candidates if args.all or c.unique]
    if args.format == "csv":
        write_records(candidates, "csv", sys.stdout)
        print("# counts: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()), file=sys.stderr)
    else:
        medians = {k: result.median(k) for k in PROPERTY_KEYS}
        payload = {"targets": result.targets, "counts": result.counts, "median_predicted": medians,
                   "warnings": result.warnings, "candidates": candidates}
        json.dump(payload, sys.stdout, indent=2, default=json_safe)
        sys.stdout.write("\n")
    return 0


def run_structures(args) -> int:
    from app.engine.compositions.runtime import CompositionPredictor
    from app.engine.compositions.structures import PrototypeLibrary, structures_for_composition
    from app.engine.core.errors import CrystalDesignerError
    from app.engine.properties.predictor import PropertyPredictor

    try:
        records = structures_for_composition(args.formula, CompositionPredictor(), PrototypeLibrary.load(),
                                             PropertyPredictor(device=args.device), limit=args.limit)
    except CrystalDesignerError as error:
        report_error(error)
        return 2
    written = _write_cifs(records, args.out) if args.out else [None] * len(records)
    rows = []
    for record, path in zip(records, written):
        rows.append({"formula": record["formula"], "source": record["source"], "prototype_id": record["prototype_id"],
                     "space_group": record["space_group"], "volume_per_atom": record["volume_per_atom"],
                     **{f"ding_{k}": v for k, v in record["ding"].items()}, **(record["properties"] or {}),
                     "cif": str(path) if path else None, "error": record["error"]})
    write_records(rows, args.format, sys.stdout)
    return 0


def _write_cifs(records: list[dict], folder: Path) -> list[Path]:
    from app.engine.io.export import safe_filename, unique_path, write_cif

    folder.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    paths = []
    for record in records:
        stem = safe_filename(f"{record['formula']}_{record['prototype_id']}")
        path = unique_path(folder, stem, ".cif", taken)
        taken.add(path.name)
        paths.append(write_cif(record["structure"], path))
    return paths
