"""Writing crystals and their predictions to disk: CIF files plus a CSV/JSON summary."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Iterable, Sequence

from app.engine.core.errors import CrystalDesignerError
from app.engine.core.property_table import PROPERTY_KEYS

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def safe_filename(text: str, fallback: str = "crystal", max_length: int = 80) -> str:
    """A file-name stem that is valid on Linux, macOS and Windows, whatever ``text`` holds."""
    stem = _UNSAFE.sub("_", text).strip("._-")[:max_length] or fallback
    return f"_{stem}" if stem.upper() in _RESERVED else stem


def unique_path(folder: Path, stem: str, suffix: str, taken: set[str] | None = None) -> Path:
    """``folder/stem.suffix``, or ``stem_2``, ``stem_3``… so nothing existing is overwritten."""
    taken = taken if taken is not None else set()
    candidate, n = folder / f"{stem}{suffix}", 1
    while candidate.exists() or candidate.name in taken:
        n += 1
        candidate = folder / f"{stem}_{n}{suffix}"
    taken.add(candidate.name)
    return candidate


def write_cif(structure, path: Path, symprec: float | None = 0.01) -> Path:
    """Write ``structure`` as a CIF (symmetrised when spglib finds symmetry at ``symprec``)."""
    from pymatgen.io.cif import CifWriter

    try:
        CifWriter(structure, symprec=symprec).write_file(str(path))
    except Exception:  # symmetry finding can fail on odd cells; P1 is always valid
        CifWriter(structure).write_file(str(path))
    return path


def _clean(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def export_structures(rows: Sequence[dict], folder: Path, summary_name: str = "summary") -> dict[str, Path | list[Path]]:
    """Write each row's ``structure`` as a CIF and all rows' fields to ``summary.csv`` / ``.json``.

    Parameters
    ----------
    rows : sequence of dict
        Each with ``structure`` (pymatgen), ``name`` (used for the file name) and any other
        fields (formula, the eight properties, flags…) for the summary.
    folder : Path
        Created if needed. Existing files are never overwritten: new names get a suffix.

    Returns
    -------
    dict
        ``{"cifs": [paths], "csv": path, "json": path}``.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CrystalDesignerError(f"Cannot create the export folder {folder}: {error.strerror}.") from error
    taken: set[str] = set()
    summary, cifs = [], []
    for row in rows:
        path = unique_path(folder, safe_filename(str(row.get("name") or row.get("formula") or "")), ".cif", taken)
        try:
            write_cif(row["structure"], path)
        except OSError as error:
            raise CrystalDesignerError(f"Cannot write {path}: {error.strerror}.") from error
        cifs.append(path)
        summary.append({"file": path.name, **{k: _clean(v) for k, v in row.items() if k not in ("structure", "name")}})
    csv_path = unique_path(folder, summary_name, ".csv", taken)
    json_path = unique_path(folder, summary_name, ".json", taken)
    keys = _ordered_keys(summary)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for entry in summary:
            writer.writerow({k: "" if entry.get(k) is None else entry.get(k) for k in keys})
    json_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return {"cifs": cifs, "csv": csv_path, "json": json_path}


def _ordered_keys(entries: Iterable[dict]) -> list[str]:
    keys: list[str] = []
    for entry in entries:
        for key, value in entry.items():
            if key not in keys and not isinstance(value, (dict, list)):
                keys.append(key)
    head = [k for k in ("file", "formula") if k in keys]
    props = [k for k in PROPERTY_KEYS if k in keys]
    return head + props + [k for k in keys if k not in head and k not in props]
