"""Exporting records as CIFs plus a CSV/JSON summary, off the GUI thread, never overwriting."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from app.engine.io.export import export_structures, safe_filename
from app.ui.records import CrystalRecord, export_row

logger = logging.getLogger(__name__)


@dataclass
class ExportReport:
    """Where an export went.

    Attributes
    ----------
    renamed : list of (wanted, written)
        Files that got a numbered suffix because the name was already taken.
    skipped : list of str
        Names of records without a structure (unreadable files, rejected candidates).
    """

    folder: Path
    cifs: list[Path] = field(default_factory=list)
    csv: Path | None = None
    json: Path | None = None
    renamed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the user."""
        lines = [f"{len(self.cifs)} CIF file{'s' if len(self.cifs) != 1 else ''} written to {self.folder}"]
        if self.csv is not None and self.json is not None:
            lines.append(f"Summary: {self.csv.name} and {self.json.name}")
        if self.renamed:
            examples = ", ".join(f"{written}" for _wanted, written in self.renamed[:3])
            more = f" and {len(self.renamed) - 3} more" if len(self.renamed) > 3 else ""
            lines.append(f"{len(self.renamed)} name{'s were' if len(self.renamed) != 1 else ' was'} already taken, so "
                         f"a number was added ({examples}{more}); no file was overwritten.")
        if self.skipped:
            lines.append(f"{len(self.skipped)} row{'s' if len(self.skipped) != 1 else ''} without a structure "
                         f"skipped: {', '.join(self.skipped[:3])}{'…' if len(self.skipped) > 3 else ''}")
        return "\n".join(lines)


def export_now(records: list[CrystalRecord], folder: Path, relaxed: bool = True) -> ExportReport:
    """Write the records (blocking; see :func:`export_records`)."""
    folder = Path(folder)
    report = ExportReport(folder)
    rows = []
    for record in records:
        row = export_row(record, relaxed=relaxed)
        if row is None:
            report.skipped.append(record.name)
        else:
            rows.append(row)
    if not rows:
        return report
    written = export_structures(rows, folder)
    report.cifs, report.csv, report.json = list(written["cifs"]), written["csv"], written["json"]
    for row, path in zip(rows, report.cifs):
        wanted = f"{safe_filename(str(row.get('name') or row.get('formula') or ''))}.cif"
        if path.name != wanted:
            report.renamed.append((wanted, path.name))
    for path, wanted in ((report.csv, "summary.csv"), (report.json, "summary.json")):
        if path.name != wanted:
            report.renamed.append((wanted, path.name))
    logger.info("Exported %d structures to %s", len(report.cifs), folder)
    return report


async def export_records(records: list[CrystalRecord], folder: Path, relaxed: bool = True) -> ExportReport:
    """Write CIFs and the summary in a thread (CIF symmetrisation takes ~10 ms per structure).

    ``relaxed`` (default): relaxed candidates are written as their relaxed crystals; False writes the
    decoded (unrelaxed) cells.

    Raises
    ------
    CrystalDesignerError
        When the folder or a file cannot be written (the engine's message).
    """
    return await asyncio.get_running_loop().run_in_executor(None, export_now, list(records), Path(folder), relaxed)
