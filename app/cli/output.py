"""How commands write their records: JSON (full floats) or CSV, and error lines on stderr."""

from __future__ import annotations

import csv
import json
import math
import sys

from app.engine.core.formatting import format_value, round_record


def json_safe(value):
    """``value`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def add_precision_argument(parser) -> None:
    """``--precision N``: decimals of every number in CSV/text output (and JSON, which is full otherwise)."""
    parser.add_argument("--precision", type=int, default=None, metavar="N",
                        help="decimals of numbers in CSV/text output (default: per property, e.g. 3 for "
                             "eV/atom, 0 for GPa, else 4 significant digits); JSON keeps full floats unless given")


def write_records(records: list[dict], fmt: str, stream, precision: int | None = None) -> None:
    """Write ``records`` to ``stream`` as ``json`` or ``csv`` (warnings joined with "; ").

    CSV numbers are rounded by :mod:`app.engine.core.formatting` (``precision`` decimals if given);
    JSON keeps full floats unless ``precision`` is given.
    """
    if fmt == "csv":
        keys = [k for k in records[0].keys()] if records else ["source", "formula", "error"]
        writer = csv.DictWriter(stream, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            row = dict(record)
            row["warnings"] = "; ".join(record.get("warnings") or [])
            writer.writerow({k: format_value(k, v, precision) if isinstance(v, float) else ("" if v is None else v)
                             for k, v in row.items()})
    else:
        if precision is not None:
            records = [round_record(r, precision) for r in records]
        clean = [{k: json_safe(v) for k, v in r.items()} for r in records]
        json.dump(clean, stream, indent=2, ensure_ascii=False)
        stream.write("\n")


def report_error(error) -> None:
    """One line on stderr naming the problem (no traceback)."""
    print(f"crystal-designer: {error}", file=sys.stderr)


def write_json(payload, stream=None) -> None:
    stream = stream or sys.stdout
    json.dump(payload, stream, indent=2, default=str)
    stream.write("\n")
