"""``crystal-designer``: the headless command line over the engine.

Subcommands
-----------
predict PATH...      eight properties of each structure (JSON or CSV on stdout)
generate --base PATH new candidate crystals around a base (ICSG3D), filtered, as CIFs
reconstruct PATH...  encode and decode cubic crystals through the generator
train NAME           retrain a shipped model from the shared data
evaluate NAME        validation metrics of a shipped model
build-index          rebuild the training-set index used by the novelty filter
gui                  the desktop window (PySide6; Qt is imported only by this subcommand)
--self-test          check the installation end to end (see app.selftest) and exit
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

GENERATOR_MODELS = ("segmentation_unet", "density_vae")


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


def _read_one(path: str):
    """The first structure in ``path``, or a CrystalDesignerError naming the problem."""
    from app.engine.crystal_io import read_crystal_file
    from app.engine.errors import StructureReadError

    loaded = read_crystal_file(path)
    good = [c for c in loaded if c.ok]
    if not good:
        raise StructureReadError(loaded[0].error if loaded else f"{path}: no structure found.")
    return good[0].structure


def _parse_window(text: str) -> tuple[str, tuple[float | None, float | None]]:
    """``band_gap=1:3``, ``bulk_modulus=100:`` → (key, (min, max))."""
    key, equals, bounds = text.partition("=")
    low, colon, high = bounds.partition(":")
    if not (key.strip() and equals and colon):
        raise argparse.ArgumentTypeError(f"Window '{text}' should look like key=min:max.")
    try:
        return key.strip(), (float(low) if low.strip() else None, float(high) if high.strip() else None)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"Window '{text}': {error}") from error


def _candidate_record(candidate, file_name: str | None) -> dict:
    from app.engine.properties import PROPERTY_KEYS

    record = {"file": file_name, "index": candidate.index, "formula": candidate.formula}
    record.update({k: candidate.properties.get(k) for k in PROPERTY_KEYS})
    record["flags"] = candidate.flags
    record["latent_distance"] = candidate.latent_distance
    record["kept"] = candidate.kept
    if candidate.error:
        record["error"] = candidate.error
    return record


def _command_generate(args) -> int:
    from pathlib import Path

    from app.engine.errors import CrystalDesignerError
    from app.engine.export import safe_filename, unique_path, write_cif
    from app.engine.generator import FUNNEL_STAGES, CrystalGenerator, GenerationSettings

    settings = GenerationSettings(
        mode=args.mode, count=args.n, sigma=args.sigma, decile=args.decile, seed=args.seed,
        min_distance=args.min_distance, require_charge_balance=not args.allow_unbalanced,
        require_same_formula=args.same_formula, require_novel=not args.allow_known,
        property_windows=dict(args.window or []),
    )
    try:
        settings.validate()
        base = _read_one(args.base) if args.base else None
        second = _read_one(args.second) if args.second else None
        generator = CrystalGenerator(device=args.device)
        try:
            result = generator.generate(settings, base=base, second=second)
        finally:
            generator.close()
    except CrystalDesignerError as error:
        print(f"crystal-designer: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    records, taken = [], set()
    for candidate in result.kept:
        name = None
        if out is not None:
            path = unique_path(out, f"{candidate.index:05d}_{safe_filename(candidate.formula or 'crystal')}", ".cif", taken)
            write_cif(candidate.structure, path)
            name = str(path)
        records.append(_candidate_record(candidate, name))
    funnel = [{"stage": key, "label": label, "count": result.funnel[key]} for key, label in FUNNEL_STAGES]
    payload = {"settings": vars(settings), "funnel": funnel, "candidates": records}
    if args.format == "json":
        json.dump(payload, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        for stage in funnel:
            print(f"{stage['label']:<28} {stage['count']:>7}")
        for record in records:
            print(record["file"] or record["formula"])
    return 0


def _command_reconstruct(args) -> int:
    from pathlib import Path

    from app.engine.crystal_io import read_crystals
    from app.engine.errors import CrystalDesignerError
    from app.engine.export import safe_filename, unique_path, write_cif
    from app.engine.generator import CrystalGenerator

    try:
        generator = CrystalGenerator(device=args.device)
    except CrystalDesignerError as error:
        print(f"crystal-designer: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, failed, taken = [], 0, set()
    for crystal in read_crystals(args.paths):
        record = {"source": crystal.source, "file": None, "error": crystal.error}
        if crystal.ok:
            try:
                decoded = generator.reconstruct(crystal.structure)
                stem = safe_filename(Path(crystal.source.split("#")[0]).stem + (f"_{crystal.block}" if crystal.block else ""))
                path = unique_path(out, stem, ".cif", taken)
                write_cif(decoded, path)
                record.update(file=str(path), formula=decoded.composition.reduced_formula)
            except CrystalDesignerError as error:
                record["error"] = f"{crystal.name}: {error}"
        failed += record["error"] is not None
        records.append(record)
    json.dump(records, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 1 if failed else 0


def _command_train(args) -> int:
    if args.name in GENERATOR_MODELS:
        from app.engine.training import train_generator

        options = {"fresh": args.fresh, **({"epochs": args.epochs} if args.epochs else {}),
                   **({"learning_rate": args.learning_rate} if args.learning_rate else {})}
        if args.name == train_generator.UNET_NAME:
            entry = train_generator.train_unet(**options)
        else:
            entry = train_generator.train_vae(
                **options, continue_shipped=args.continue_shipped,
                **({"species_weight": args.species_weight} if args.species_weight else {}))
    else:
        from app.engine.training.train_property import train

        entry = train(args.name, epochs=args.epochs, fresh=args.fresh)
    json.dump(entry["metrics"], sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _command_evaluate(args) -> int:
    if args.name == "generator":
        from app.engine.training.evaluate_generator import evaluate_generator

        report = evaluate_generator(n_reconstruct=args.n_reconstruct, n_samples=args.n_samples)
        if args.record:
            from app.engine.training.evaluate_generator import record_generator_metrics

            record_generator_metrics(report, f"crystal-designer evaluate generator --n-reconstruct "
                                             f"{args.n_reconstruct} --n-samples {args.n_samples}")
    else:
        from app.engine.training.train_property import evaluate

        report = evaluate(args.name)
    json.dump(report, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 0


def _command_build_index(args) -> int:
    from app.engine.training.element_references import build_element_references
    from app.engine.training.training_index import build_training_index

    print(build_element_references())
    print(build_training_index())
    return 0


def _command_gui(args) -> int:
    # Qt, pyvista and qasync are imported here only, so the headless commands never load them.
    from app.ui.application import run_gui

    return run_gui(open_paths=args.open, screenshot=args.screenshot, device=args.device)


def build_parser() -> argparse.ArgumentParser:
    from app.engine.devices import DEVICE_CHOICES

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

    predict = commands.add_parser("predict", help="predict the eight properties of crystal files")
    predict.add_argument("paths", nargs="+", help="CIF/POSCAR/... files or folders")
    predict.add_argument("--format", choices=("json", "csv"), default="json")
    predict.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    predict.add_argument("--workers", type=int, default=None, help="processes reading files (default: cores)")
    predict.add_argument("--max-file-mb", type=float, default=20.0, help="refuse larger files (MB)")
    predict.add_argument("--max-sites", type=int, default=5000, help="refuse structures with more sites")
    predict.set_defaults(handler=_command_predict)

    from app.engine.training.recipes import RECIPE_NAMES

    generate = commands.add_parser("generate", help="generate candidate crystals (ICSG3D) and filter them")
    generate.add_argument("--base", help="base structure file (modes around, interpolate)")
    generate.add_argument("--second", help="second structure (mode interpolate)")
    generate.add_argument("--mode", choices=("around", "random", "interpolate"), default="around")
    generate.add_argument("--n", type=int, default=100, help="number of latent samples")
    generate.add_argument("--sigma", type=float, default=0.5, help="latent spread around the base")
    generate.add_argument("--decile", type=int, default=None, help="formation-energy decile 0-9 (default: base's)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--min-distance", type=float, default=0.5, help="smallest allowed distance (Å)")
    generate.add_argument("--same-formula", action="store_true", help="keep only the base's formula")
    generate.add_argument("--allow-known", action="store_true", help="keep structures of the training set")
    generate.add_argument("--allow-unbalanced", action="store_true", help="keep non-charge-balanced ones")
    generate.add_argument("--window", action="append", type=_parse_window, metavar="KEY=MIN:MAX",
                          help="keep predictions inside this window, e.g. band_gap=1:3 (repeatable)")
    generate.add_argument("--out", help="folder for the kept candidates' CIFs")
    generate.add_argument("--format", choices=("json", "text"), default="json")
    generate.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    generate.set_defaults(handler=_command_generate)

    reconstruct = commands.add_parser("reconstruct", help="encode + decode structures through the generator")
    reconstruct.add_argument("paths", nargs="+")
    reconstruct.add_argument("--out", required=True, help="folder for <input stem>.cif")
    reconstruct.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    reconstruct.set_defaults(handler=_command_reconstruct)

    train = commands.add_parser("train", help="retrain a model from ../shared/data (hours on CPU)")
    train.add_argument("name", choices=RECIPE_NAMES + GENERATOR_MODELS)
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--fresh", action="store_true", help="ignore the checkpoint instead of resuming")
    train.add_argument("--learning-rate", type=float, default=None, help="generator models: peak learning rate")
    train.add_argument("--species-weight", type=float, default=None,
                       help="density_vae: weight of the species cross-entropy")
    train.add_argument("--continue", dest="continue_shipped", action="store_true",
                       help="density_vae: start from the shipped weights with a new learning-rate cycle")
    train.set_defaults(handler=_command_train)

    evaluate = commands.add_parser("evaluate", help="validation metrics of a shipped model")
    evaluate.add_argument("name", choices=RECIPE_NAMES + ("generator",))
    evaluate.add_argument("--n-reconstruct", type=int, default=300, help="generator: cells per set")
    evaluate.add_argument("--n-samples", type=int, default=1000, help="generator: random samples")
    evaluate.add_argument("--record", action="store_true",
                          help="generator: store the report in the VAE's manifest entry and model card")
    evaluate.set_defaults(handler=_command_evaluate)

    index = commands.add_parser("build-index", help="rebuild models/ training index and element references")
    index.set_defaults(handler=_command_build_index)

    gui = commands.add_parser("gui", help="open the desktop window")
    gui.add_argument("--open", nargs="+", action="extend", metavar="PATH", default=[],
                     help="crystal files or folders to open (repeatable)")
    gui.add_argument("--screenshot", metavar="PNG", help="save the window once the files are predicted, then exit")
    gui.add_argument("--device", choices=DEVICE_CHOICES, default=None, help="override the saved device setting")
    gui.set_defaults(handler=_command_gui)
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
    try:
        if args.self_test:
            from app.selftest import run_self_test

            return run_self_test()
        return args.handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
