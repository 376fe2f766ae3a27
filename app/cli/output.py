"""How commands write their records: JSON (full floats) or CSV, and error lines on stderr."""

from __future__ import annotations

import csv
import json
import math
import sys


def json_safe(value):
    """``value`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_records(records: list[dict], fmt: str, stream) -> None:
    """Write ``records`` to ``stream`` as ``json`` or ``csv`` (warnings joined with "; ")."""
    if fmt == "csv":
        keys = [k for k in records[0].keys()] if records else ["source", "formula", "error"]
        writer = csv.DictWriter(stream, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            row = dict(record)
            row["warnings"] = "; ".join(record.get("warnings") or [])
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    else:
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
