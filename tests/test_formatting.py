"""Numbers as people read them: per-property decimals, else 4 significant digits; CSV vs JSON."""

from __future__ import annotations

import io
import json

from app.cli.output import write_records
from app.engine.core.formatting import format_value, round_record, round_significant


def test_per_property_decimals_and_significant_digits():
    assert format_value("formation_energy_per_atom", -2.107822895) == "-2.108"
    assert format_value("bulk_modulus", 22.41) == "22"
    assert format_value("band_gap", 5.6249) == "5.62"
    assert format_value("some_ratio", 0.000123456) == "0.0001235"
    assert format_value("band_gap", 5.6249, precision=1) == "5.6"
    assert format_value("band_gap", None) == ""
    assert round_significant(123456.0) == 123500.0


def test_csv_is_rounded_and_json_keeps_full_floats_unless_asked():
    record = {"source": "x", "formation_energy_per_atom": -2.107822895, "warnings": [], "flags": {"a": True}}
    csv_text = io.StringIO()
    write_records([record], "csv", csv_text)
    assert "-2.108" in csv_text.getvalue() and "-2.1078" not in csv_text.getvalue()
    full = io.StringIO()
    write_records([record], "json", full)
    assert json.loads(full.getvalue())[0]["formation_energy_per_atom"] == -2.107822895
    short = io.StringIO()
    write_records([record], "json", short, precision=2)
    assert json.loads(short.getvalue())[0]["formation_energy_per_atom"] == -2.11
    assert round_record({"flags": {"kept": True}, "n": 3}) == {"flags": {"kept": True}, "n": 3}
