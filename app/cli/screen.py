"""``crystal-designer screen``: a screening campaign (generate + filter + predict) on Dask."""

from __future__ import annotations

import argparse
import json
import sys

from app.cli.output import report_error
from app.engine.generation.settings import MODES, GenerationSettings

DEFAULTS = GenerationSettings()


def add_parser(commands, device_choices) -> None:
    screen = commands.add_parser("screen", help="screen many candidates around many bases on a Dask cluster")
    screen.add_argument("--base", action="append", default=[], metavar="PATH",
                        help="base structure file (repeatable; not needed with --mode random)")
    screen.add_argument("--n-per-base", type=int, required=True, metavar="N", help="latent samples per base")
    screen.add_argument("--mode", choices=[m for m in MODES if m != "interpolate"], default="around")
    screen.add_argument("--sigma", type=float, default=DEFAULTS.sigma, help="latent spread around each base")
    screen.add_argument("--seed", type=int, default=0)
    where = screen.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="address of a running Dask scheduler")
    where.add_argument("--local-workers", type=int, default=2, metavar="K",
                       help="without --scheduler: start a local cluster of K worker processes (default 2)")
    screen.add_argument("--chunk", type=int, default=None, metavar="N", help="samples per task (default 256)")
    screen.add_argument("--relax", action=argparse.BooleanOptionalAction, default=DEFAULTS.relax,
                        help="relax kept candidates with CHGNet, as generate does")
    screen.add_argument("--out", required=True, help="campaign folder (Parquet partitions, CIFs, summaries)")
    screen.add_argument("--resume", action="store_true", help="reuse every chunk already written to --out")
    screen.add_argument("--format", choices=("json", "text"), default="json")
    screen.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    from app.engine.campaign.runtime import DEFAULT_CHUNK, run_campaign
    from app.engine.core.errors import CrystalDesignerError

    if args.mode == "around" and not args.base:
        report_error("--mode around needs at least one --base.")
        return 2
    settings = GenerationSettings(mode=args.mode, sigma=args.sigma, relax=args.relax)
    client = None
    try:
        if args.scheduler:
            from distributed import Client

            client = Client(args.scheduler, timeout=30)
        result = run_campaign(args.base, args.n_per_base, settings, Path(args.out), seed=args.seed, client=client,
                              local_workers=args.local_workers, resume=args.resume,
                              chunk=args.chunk or DEFAULT_CHUNK, progress=_progress if args.format == "text" else None)
    except (CrystalDesignerError, OSError) as error:
        report_error(error)
        return 2
    finally:
        if client is not None:
            client.close()
    report = result.to_dict()
    if args.format == "json":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{result.samples} samples in {result.seconds:.1f} s ({result.reused_tasks} of {result.tasks} chunks reused)")
        for key, count in result.funnel.items():
            print(f"  {key:<20} {count}")
        print(f"kept {result.kept}: CIFs in {result.cifs_dir}, table in {result.candidates_dir}")
        for base, error in result.base_errors.items():
            print(f"base {base}: {error}")
    return 1 if result.base_errors else 0


def _progress(done: int, total: int, message: str) -> None:
    print(f"[{done}/{total}] {message}", file=sys.stderr)
