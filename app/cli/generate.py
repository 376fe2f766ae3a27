"""``crystal-designer generate`` and ``reconstruct``: the ICSG3D generator from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.cli.output import add_precision_argument, report_error, write_json
from app.engine.core.formatting import format_value, round_record
from app.engine.core.property_table import PROPERTY_KEYS
from app.engine.generation.settings import (FUNNEL_STAGES, MIN_DISTANCE_RANGE, MODES, MODES_WITH_BASE, N_DECILES,
                                           SIGMA_RANGE, GenerationSettings)
from app.engine.stability.formation import HULL_ENERGY_SOURCES

#: The engine's defaults (one source for the window and the command line).
DEFAULTS = GenerationSettings()


def add_parser(commands, device_choices) -> None:
    generate = commands.add_parser("generate", help="generate candidate crystals (ICSG3D) and filter them")
    generate.add_argument("--base", help=f"base structure file (modes {', '.join(MODES_WITH_BASE)})")
    generate.add_argument("--second", help="second structure (mode interpolate)")
    generate.add_argument("--mode", choices=MODES, default=DEFAULTS.mode)
    generate.add_argument("--n", type=int, default=DEFAULTS.count, help="number of latent samples")
    generate.add_argument("--sigma", type=float, default=DEFAULTS.sigma,
                          help="latent spread around the base (%g-%g)" % SIGMA_RANGE)
    condition = generate.add_mutually_exclusive_group()
    condition.add_argument("--decile", type=int, default=DEFAULTS.decile,
                           help=f"formation-energy decile 0-{N_DECILES - 1} to condition on (default: the base's)")
    condition.add_argument("--target-formation-energy", type=float, default=DEFAULTS.target_formation_energy,
                           metavar="EV_PER_ATOM", help="condition on the decile of this formation energy (eV/atom)")
    generate.add_argument("--seed", type=int, default=DEFAULTS.seed)
    generate.add_argument("--min-distance", type=float, default=DEFAULTS.min_distance,
                          help="smallest allowed distance (Å, %g-%g)" % MIN_DISTANCE_RANGE)
    generate.add_argument("--same-formula", action="store_true", help="keep only the base's formula")
    generate.add_argument("--allow-known", action="store_true", help="keep the base and known crystals (structural novelty off)")
    generate.add_argument("--allow-unbalanced", action="store_true", help="keep non-charge-balanced ones")
    generate.add_argument("--window", action="append", type=parse_window, metavar="KEY=MIN:MAX",
                          help="keep predictions inside this window, e.g. band_gap=1:3 (repeatable)")
    generate.add_argument("--relax", action=argparse.BooleanOptionalAction, default=DEFAULTS.relax,
                          help="relax the kept candidates with CHGNet before the hull and novelty stages")
    generate.add_argument("--relax-all", action="store_true",
                          help="relax every decoded candidate, not only the kept ones (slower)")
    generate.add_argument("--max-e-above-hull", type=float, default=DEFAULTS.max_e_above_hull, metavar="EV_PER_ATOM",
                          help="keep candidates at most this far above the convex hull (eV/atom)")
    generate.add_argument("--allow-far-from-hull", action="store_true", help="keep candidates far above the hull")
    generate.add_argument("--hull-energy", choices=tuple(HULL_ENERGY_SOURCES), default=DEFAULTS.hull_energy,
                          help="formation energy of a relaxed candidate placed on the hull: "
                               + "; ".join(f"{key}: {text}" for key, text in HULL_ENERGY_SOURCES.items())
                               + " (default %(default)s)")
    generate.add_argument("--out", help="folder for the kept candidates' CIFs")
    generate.add_argument("--unrelaxed-cifs", action="store_true",
                          help="write the decoded (unrelaxed) cells instead of the relaxed ones")
    generate.add_argument("--format", choices=("json", "text"), default="json")
    add_precision_argument(generate)
    generate.add_argument("--device", choices=device_choices, default="auto")
    generate.set_defaults(handler=run_generate)

    reconstruct = commands.add_parser("reconstruct", help="encode + decode structures through the generator")
    reconstruct.add_argument("paths", nargs="+")
    reconstruct.add_argument("--out", required=True, help="folder for <input stem>.cif")
    reconstruct.add_argument("--device", choices=device_choices, default="auto")
    reconstruct.set_defaults(handler=run_reconstruct)


def read_first_structure(path: str):
    """The first structure in ``path``, or a CrystalDesignerError naming the problem."""
    from app.engine.core.errors import StructureReadError
    from app.engine.io.crystal_io import read_crystal_file

    loaded = read_crystal_file(path)
    good = [c for c in loaded if c.ok]
    if not good:
        raise StructureReadError(loaded[0].error if loaded else f"{path}: no structure found.")
    return good[0].structure


def parse_window(text: str) -> tuple[str, tuple[float | None, float | None]]:
    """``band_gap=1:3``, ``bulk_modulus=100:`` → (key, (min, max))."""
    key, equals, bounds = text.partition("=")
    low, colon, high = bounds.partition(":")
    if not (key.strip() and equals and colon):
        raise argparse.ArgumentTypeError(f"Window '{text}' should look like key=min:max.")
    try:
        return key.strip(), (float(low) if low.strip() else None, float(high) if high.strip() else None)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"Window '{text}': {error}") from error


def candidate_record(candidate, file_name: str | None) -> dict:
    """One kept candidate as a JSON-ready record."""
    from app.engine.core.property_table import PROPERTY_KEYS
    from app.engine.generation.assessment import stability_record

    record = {"file": file_name, "index": candidate.index, "formula": candidate.formula}
    record.update({k: candidate.properties.get(k) for k in PROPERTY_KEYS})
    record["flags"] = candidate.flags
    record["latent_distance"] = candidate.latent_distance
    record["kept"] = candidate.kept
    record.update(stability_record(candidate))
    if candidate.error:
        record["error"] = candidate.error
    return record


def run_generate(args) -> int:
    from app.engine.core.errors import CrystalDesignerError
    from app.engine.generation.generator import CrystalGenerator
    from app.engine.generation.assessment import final_structure
    from app.engine.io.export import safe_filename, unique_path, write_cif

    try:
        settings = GenerationSettings(
            mode=args.mode, count=args.n, sigma=args.sigma, decile=args.decile,
            target_formation_energy=args.target_formation_energy, seed=args.seed,
            min_distance=args.min_distance, require_charge_balance=not args.allow_unbalanced,
            require_same_formula=args.same_formula, require_novel=not args.allow_known,
            property_windows=dict(args.window or []), relax=args.relax, relax_all=args.relax_all,
            max_e_above_hull=args.max_e_above_hull, require_near_hull=not args.allow_far_from_hull,
            hull_energy=args.hull_energy,
        )
        base = read_first_structure(args.base) if args.base else None
        second = read_first_structure(args.second) if args.second else None
        generator = CrystalGenerator(device=args.device)
        try:
            result = generator.generate(settings, base=base, second=second)
        finally:
            generator.close()
    except CrystalDesignerError as error:
        report_error(error)
        return 2
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    records, taken = [], set()
    for candidate in result.kept:
        name = None
        if out is not None:
            path = unique_path(out, f"{candidate.index:05d}_{safe_filename(candidate.formula or 'crystal')}", ".cif", taken)
            write_cif(candidate.structure if args.unrelaxed_cifs else final_structure(candidate), path)
            name = str(path)
        records.append(candidate_record(candidate, name))
    funnel = [{"stage": stage.key, "label": stage.label, "count": result.funnel[stage.key]} for stage in FUNNEL_STAGES]
    payload = {"settings": vars(settings), "funnel": funnel, "sun": result.sun, "candidates": records}
    if args.format == "json":
        if args.precision is not None:
            payload["candidates"] = [round_record(r, args.precision) for r in records]
        write_json(payload)
    else:
        for stage in funnel:
            print(f"{stage['label']:<28} {stage['count']:>7}")
        print(f"{'Stable, unique, novel':<28} {result.sun:>7}")
        for record in records:
            shown = "  ".join(f"{key}={format_value(key, record[key], args.precision)}" for key in PROPERTY_KEYS
                              if record.get(key) is not None)
            print(f"{record['file'] or record['formula']}  {shown}".rstrip())
    return 0


def run_reconstruct(args) -> int:
    from app.engine.core.errors import CrystalDesignerError
    from app.engine.generation.generator import CrystalGenerator
    from app.engine.io.crystal_io import read_crystals
    from app.engine.io.export import safe_filename, unique_path, write_cif

    try:
        generator = CrystalGenerator(device=args.device)
    except CrystalDesignerError as error:
        report_error(error)
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
