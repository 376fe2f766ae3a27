"""Reading crystal files through pymatgen (then ASE), where every problem is data, not an exception.

``read_crystal_file`` and ``read_crystals`` return :class:`LoadedCrystal` entries: a structure
(possibly with warnings) or an error message written for a scientist, naming the file and what
is wrong. Bad input never raises; only cancellation does (``CancelledError``).

pymatgen is lenient in ways that hide bad data (NaN coordinates, unknown element symbols read as
dummy species, "Bq" read as boron, zero-volume cells) and raises cryptic errors on others
(a truncated CIF loop raises ``ZeroDivisionError``), so the checks here wrap it on both sides.
Formats pymatgen does not read go through ASE (:mod:`app.engine.io.ase_formats`), SHELX files
through :mod:`app.engine.io.shelx`; gzip/bzip2/xz files are unpacked first (by magic bytes).
Multi-frame files give one entry per frame (``file#N``), multi-block CIFs one per block
(``file#block``). Every read runs under a time limit (:attr:`ReadLimits.max_seconds`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pymatgen.core import DummySpecies, Element, Structure

from app.engine.core.cancel import CancelToken
from app.engine.core.errors import StructureReadError
from app.engine.io import poscar
from app.engine.io.ase_formats import ASE_NAMES, ASE_SUFFIXES, FORMAT_LABELS, ase_format, read_with_ase
from app.engine.io.cif_dialects import normalise_cif_block
from app.engine.io.fast_cif import read_plain_cif_block
from app.engine.io.compression import decompress, strip_compression_suffix
from app.engine.io.shelx import looks_like_shelx, shelx_to_cif
from app.engine.io.time_limit import TimeLimitExceeded, call_with_time_limit

logger = logging.getLogger(__name__)

#: File suffixes read from folders (also with ``.gz``, ``.bz2`` or ``.xz`` appended). Files named
#: ``POSCAR*``, ``CONTCAR*`` or ``geometry.in`` are read too. Quantum ESPRESSO input goes through
#: ASE (with ``ibrav`` lattices rebuilt), not pymatgen's ``PWInput``, which ignores ``ibrav``/``celldm``.
SUPPORTED_SUFFIXES: tuple[str, ...] = (".cif", ".mcif", ".vasp", ".poscar", ".xsf", ".json", ".cssr", ".res", ".ins",
                                       *ASE_SUFFIXES)
SUPPORTED_NAME_PREFIXES: tuple[str, ...] = ("POSCAR", "CONTCAR")
_SHELX_SUFFIXES = (".res", ".ins")

_FORMATS = {".vasp": "poscar", ".poscar": "poscar", ".xsf": "xsf", ".json": "json", ".cssr": "cssr", ".res": "res"}
_FORMAT_LABELS = {"poscar": "a VASP POSCAR file", "xsf": "an XCrySDen XSF file", "json": "pymatgen JSON",
                  "cssr": "a CSSR file", "res": "a SHELX/AIRSS RES file"}
_MIN_DISTANCE = 0.5  # Å; closer atoms are almost always duplicated sites
_DUPLICATE_DISTANCE = 0.15  # Å; identical atoms this close are one atom written twice, and are merged
_CIF_BLOCK_RE = re.compile(r"^[ \t]*data_(\S*)", re.MULTILINE)  # case-sensitive, as pymatgen splits blocks
_CIF_STRUCTURE_RE = re.compile(r"^[ \t]*_(cell_length|atom_site_fract|atom_site_cartn)", re.MULTILINE | re.I)
# Type symbols pymatgen maps on purpose (water oxygens/hydrogens), not unknown elements.
_CIF_SYMBOL_ALIASES = {"OW", "HW", "WAT", "OH", "OH2"}
# Noise pymatgen emits for most valid files, and rewordings of its developer-style messages.
_IGNORED_WARNINGS = ("Skipping relative stoichiometry check",)
_REWORDED = (
    (re.compile(r"No _symmetry_equiv_pos_as_xyz type key found.*"),
     "The CIF lists no symmetry operations; they were generated from its space group symbol."),
    (re.compile(r"Some occupancies \((.*?)\) sum to > 1.*"),
     r"Site occupancies sum to more than 1 (\1); sums up to 1.05 were rescaled to 1."),
)


@dataclass(frozen=True)
class ReadLimits:
    """Limits protecting the app from huge or runaway inputs.

    Attributes
    ----------
    max_file_bytes : int
        Largest file (after decompression for ``.gz``) that is read at all.
    max_sites : int
        Most sites a structure may have (after applying CIF symmetry operations).
    max_seconds : float
        Longest time one file may take to read (s); longer reads become an error entry.
    fast_cif : bool
        Read plain CIF blocks with the compiled reader (:mod:`app.engine.io.fast_cif`), which
        gives the same structures as pymatgen's CifParser with a third of the CPU time and leaves every other
        block to pymatgen. False reads every CIF with pymatgen (for comparisons).
    """

    max_file_bytes: int = 20_000_000
    max_sites: int = 5_000
    max_seconds: float = 60.0
    fast_cif: bool = True


@dataclass
class LoadedCrystal:
    """One crystal read from a file: a structure, or an error message, plus warnings.

    Attributes
    ----------
    source : str
        File path; ``"path#block"`` for one data block of a CIF holding several, ``"path#N"`` for
        frame N (from 1) of a multi-frame file.
    block : str or None
        That data block's name or frame number (None for single-structure files).
    structure : Structure or None
        The structure, None when it could not be read.
    warnings : list of str
        Short readable notes (disorder, close atoms, pymatgen corrections).
    error : str or None
        Why no usable structure was read; names the file.
    """

    source: str
    structure: Structure | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    block: str | None = None

    @property
    def ok(self) -> bool:
        """True when a structure was read without error."""
        return self.structure is not None and self.error is None

    @property
    def name(self) -> str:
        """Short label: the file name, plus ``#block`` for one block of a multi-block CIF."""
        if self.block is None:
            return Path(self.source).name
        return Path(self.source.removesuffix(f"#{self.block}")).name + f"#{self.block}"


def is_supported(path: str | Path) -> bool:
    """Whether a file in a folder is picked up as a crystal file (by its name only)."""
    base = strip_compression_suffix(Path(path).name)
    return (Path(base).suffix.lower() in SUPPORTED_SUFFIXES or base.upper().startswith(SUPPORTED_NAME_PREFIXES)
            or base.lower() in ASE_NAMES)


def file_dialog_patterns() -> str:
    """Glob patterns of every readable file, compressed ones included, for an Open dialog's filter."""
    from app.engine.io.compression import COMPRESSION_SUFFIXES

    endings = ("",) + COMPRESSION_SUFFIXES
    names = [f"*{s}{c}" for s in SUPPORTED_SUFFIXES for c in endings]
    names += [f"{p}*" for p in SUPPORTED_NAME_PREFIXES] + [f"{n}{c}" for n in ASE_NAMES for c in endings]
    return " ".join(names)


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[LoadedCrystal]]:
    """Turn files and folders into a list of files to read.

    Folders expand recursively (sorted) to their supported files, skipping hidden entries
    (e.g. macOS ``._name.cif`` resource forks). Files given explicitly are kept whatever their suffix.

    Returns
    -------
    files : list of Path
        Files to read, without duplicates, in the given order.
    errors : list of LoadedCrystal
        Entries for paths that do not exist or folders without any crystal file.
    """
    files: list[Path] = []
    errors: list[LoadedCrystal] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(p)

    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = []
            for root, dirs, names in os.walk(path):  # os.walk does not follow symlinked folders (no loops)
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [Path(root, n) for n in names if not n.startswith(".") and is_supported(n)]
            if not found:
                errors.append(LoadedCrystal(str(path), error=f"Folder {path.name} contains no supported crystal files "
                                            f"({', '.join(SUPPORTED_SUFFIXES)}, POSCAR, CONTCAR)."))
            for p in sorted(found):
                add(p)
        elif path.exists():
            add(path)
        else:
            errors.append(LoadedCrystal(str(path), error=f"File not found: {path}"))
    return files, errors


def read_crystal_file(path: str | Path, limits: ReadLimits = ReadLimits()) -> list[LoadedCrystal]:
    """Read one crystal file; never raises for bad input.

    Parameters
    ----------
    path : str or Path
        The file. CIFs with several structural data blocks give one entry per block.
    limits : ReadLimits
        File size and site count limits.

    Returns
    -------
    list of LoadedCrystal
        At least one entry; failed entries carry ``error`` and no structure.
    """
    path = Path(path)
    try:
        return call_with_time_limit(lambda: _read_file(path, limits), limits.max_seconds)
    except TimeLimitExceeded:
        logger.info("Reading %s took longer than %s s", path, limits.max_seconds)
        return [LoadedCrystal(str(path), error=f"{path.name}: reading took longer than {limits.max_seconds:g} s and "
                              "was stopped (the file may be malformed or far too large).")]


def _read_file(path: Path, limits: ReadLimits) -> list[LoadedCrystal]:
    warns: list[str] = []
    try:
        text = _read_text(path, limits, warns)
        base = strip_compression_suffix(path.name)
        if _is_cif(base, text):
            return _read_cif(path, text, warns, limits)
        suffix = Path(base).suffix.lower()
        if suffix == ".ins" or suffix in _SHELX_SUFFIXES and looks_like_shelx(text):  # .res may be AIRSS
            return _read_cif(path, shelx_to_cif(text), warns, limits)
        structures = _read_other(path, base, text, warns, limits)
        if len(structures) == 1:
            return [_finish(str(path), path.name, structures[0], warns, limits)]
        return [_frame_entry(path, number, structure, warns, limits)
                for number, structure in enumerate(structures, start=1)]
    except StructureReadError as exc:
        return [LoadedCrystal(str(path), None, _dedupe(warns), f"{path.name}: {exc}")]
    except TimeLimitExceeded:
        raise
    except Exception as exc:  # a library bug must not stop a batch; the traceback goes to the log only
        logger.info("Unexpected failure reading %s", path, exc_info=True)
        return [LoadedCrystal(str(path), None, _dedupe(warns), f"{path.name}: could not be read ({_unexpected(exc)}).")]


def _frame_entry(path: Path, number: int, structure: Structure, warns: list[str], limits: ReadLimits) -> LoadedCrystal:
    entry = _finish(f"{path}#{number}", f"{path.name}#{number}", structure, list(warns), limits)
    entry.block = str(number)
    return entry


def read_crystals(
    paths: Iterable[str | Path],
    limits: ReadLimits = ReadLimits(),
    progress: Callable[[int, int, str], None] | None = None,
    cancel: CancelToken | None = None,
) -> list[LoadedCrystal]:
    """Read files and folders; one bad file never stops the others.

    Parameters
    ----------
    paths : iterable of str or Path
        Files and folders (see :func:`expand_paths`).
    limits : ReadLimits
        File size and site count limits.
    progress : callable, optional
        Called as ``progress(done, total, message)`` after each file.
    cancel : CancelToken, optional
        Anything with ``raise_if_cancelled()``, checked before each file.

    Returns
    -------
    list of LoadedCrystal
        Entries for missing paths first, then the entries of each file in order.

    Raises
    ------
    CancelledError
        When ``cancel`` asks to stop.
    """
    files, results = expand_paths(paths)
    for done, path in enumerate(files, start=1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        results += read_crystal_file(path, limits)
        if progress is not None:
            progress(done, len(files), f"Read {path.name}")
    return results


# --- reading text -------------------------------------------------------------------------------

def _read_text(path: Path, limits: ReadLimits, warns: list[str]) -> str:
    if not path.exists():
        raise StructureReadError(f"File not found: {path}")
    if path.is_dir():
        raise StructureReadError("this is a folder, not a file.")
    size = path.stat().st_size  # checked before reading so a huge file is never loaded
    if size > limits.max_file_bytes:
        raise StructureReadError(f"the file is {_size(size)}, above the {_size(limits.max_file_bytes)} limit "
                                 "for crystal files.")
    try:
        data, _compression = decompress(path.read_bytes(), limits.max_file_bytes)
    except OSError as exc:
        raise StructureReadError(f"the file could not be opened ({exc.strerror or _short(exc)}).") from None
    if not data.strip():
        raise StructureReadError("the file is empty.")
    if b"\x00" in data:
        raise StructureReadError("this is a binary file, not a text crystal file (it contains NUL bytes).")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        odd = sum(b >= 0x80 or (b < 0x20 and b not in b"\t\n\r\f") for b in data)
        if odd > 0.05 * len(data):
            raise StructureReadError("this is a binary file, not a text crystal file.") from None
        warns.append("The file is not UTF-8 text; it was read as Latin-1.")
        return data.decode("latin-1")


def _is_cif(base: str, text: str) -> bool:
    if Path(base).suffix.lower() in (".cif", ".mcif"):
        return True
    return not is_supported(base) and bool(_CIF_BLOCK_RE.search(text) and _CIF_STRUCTURE_RE.search(text))


def _pymatgen_format(base: str) -> str | None:
    if base.upper().startswith(SUPPORTED_NAME_PREFIXES):
        return "poscar"
    return _FORMATS.get(Path(base).suffix.lower())


def _read_other(path: Path, base: str, text: str, warns: list[str], limits: ReadLimits) -> list[Structure]:
    """pymatgen for the formats it reads well, then ASE; a list of one structure per frame."""
    fmt = _pymatgen_format(base)
    ase_fmt = ase_format(base, text)
    if fmt is None and ase_fmt is not None:
        return _read_ase(text, ase_fmt, warns)
    try:
        return [_read_pymatgen(path, base, fmt, text, warns, limits)]
    except StructureReadError as exc:
        fallback = ase_fmt or ("res" if fmt == "res" else None)
        if fallback is None:
            raise
        logger.debug("pymatgen could not read %s (%s); trying ASE", path, exc)
        try:
            return _read_ase(text, fallback, warns)
        except StructureReadError:
            raise exc from None  # pymatgen's message names the format the file claims to be


def _read_ase(text: str, fmt: str, warns: list[str]) -> list[Structure]:
    notes: list[str] = []
    with _collect_warnings(notes):  # ASE's warnings are for developers (keyword validation, pbc); log them
        structures = read_with_ase(text, fmt)
    for note in notes:
        logger.debug("ASE (%s): %s", fmt, note)
    warns.append(f"Read with ASE as {FORMAT_LABELS.get(fmt, fmt)}.")
    return structures


def _read_pymatgen(path: Path, base: str, fmt: str | None, text: str, warns: list[str], limits: ReadLimits) -> Structure:
    label = _FORMAT_LABELS.get(fmt, FORMAT_LABELS.get(fmt or "", "a crystal file"))
    with _collect_warnings(warns):
        try:
            if fmt == "json":
                struct = _structure_from_json(text)
            elif fmt:
                struct = Structure.from_str(text, fmt=fmt)
            else:
                struct = Structure.from_file(path)  # unknown suffix: let pymatgen guess from the name
        except StructureReadError:
            raise
        except (IndexError, ZeroDivisionError, StopIteration):
            raise StructureReadError(f"could not be read as {label}: the file looks truncated or incomplete.") from None
        except Exception as exc:
            if fmt is None:
                logger.debug("pymatgen could not read %s: %r", path, exc)
                raise StructureReadError(f"the file is not in a supported crystal format "
                                         f"({', '.join(SUPPORTED_SUFFIXES)}, POSCAR, CONTCAR).") from None
            raise StructureReadError(f"could not be read as {label} ({_short(exc)}).") from None
    if any("Defaulting to false names" in w for w in warns):  # pymatgen would invent H, He, Li, ...
        warns[:] = [w for w in warns if "Defaulting to false names" not in w]
        named = poscar.add_species_line(text, path.parent, limits.max_file_bytes)
        if named is None:
            raise StructureReadError("the POSCAR does not name its elements (no species line, VASP 4 style, and "
                                     "neither its comment line nor a POTCAR beside it names them).")
        text, origin = named
        warns.append(f"The POSCAR has no species line (VASP 4); the elements were taken from {origin}.")
        with _collect_warnings(warns):
            return Structure.from_str(text, fmt="poscar")
    return struct


def _structure_from_json(text: str) -> Structure:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StructureReadError(f"the file is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    if not isinstance(obj, dict) or not {"lattice", "sites"} <= obj.keys():
        raise StructureReadError("the file is JSON but not a pymatgen Structure (expected 'lattice' and 'sites' keys).")
    return Structure.from_dict(obj)


# --- CIF ----------------------------------------------------------------------------------------

def _read_cif(path: Path, text: str, warns: list[str], limits: ReadLimits) -> list[LoadedCrystal]:
    starts = list(_CIF_BLOCK_RE.finditer(text))
    if not starts:
        raise StructureReadError("no CIF data block was found (no 'data_' line); this does not look like a CIF file.")
    # Split blocks ourselves: pymatgen keeps only the last of equally named blocks, and one bad
    # loop anywhere would otherwise fail the whole file.
    blocks = [(m.group(1) or "unnamed", text[m.start(): nxt.start() if nxt else len(text)])
              for m, nxt in zip(starts, starts[1:] + [None])]
    blocks = [b for b in blocks if _CIF_STRUCTURE_RE.search(b[1])]  # skip e.g. publication-only blocks
    if not blocks:
        raise StructureReadError("contains no crystal structure (no data block has unit cell or atom site entries).")
    results, used = [], set()
    for name, block in blocks:
        unique, k = name, 1
        while unique in used:
            k += 1
            unique = f"{name}~{k}"
        used.add(unique)
        source, label = (f"{path}#{unique}", f"{path.name}#{unique}") if len(blocks) > 1 else (str(path), path.name)
        bw = list(warns)
        try:
            entry = _finish(source, label, _parse_cif_block(block, bw, limits), bw, limits)
        except StructureReadError as exc:
            entry = LoadedCrystal(source, None, _dedupe(bw), f"{label}: {exc}")
        except Exception as exc:  # one broken block must not hide the good ones
            logger.info("Unexpected failure reading %s", source, exc_info=True)
            entry = LoadedCrystal(source, None, _dedupe(bw), f"{label}: could not be read ({_unexpected(exc)}).")
        entry.block = unique if len(blocks) > 1 else None
        results.append(entry)
    return results


def _parse_cif_block(block: str, warns: list[str], limits: ReadLimits) -> Structure:
    if limits.fast_cif:
        fast = read_plain_cif_block(block, limits.max_sites)
        if fast is not None:
            warns.extend(fast.warnings)
            return fast.structure
    block = normalise_cif_block(block, warns)
    first_try = len(warns)
    try:
        # occupancy_tolerance > 1: refined occupancies often sum to 1.01 by rounding; pymatgen rescales them.
        return _parse_normalised_block(block, warns, limits, occupancy_tolerance=1.05)
    except _OccupancyExceeded as exc:
        if exc.total < 1.95 or abs(exc.total - round(exc.total)) > 0.05:
            del warns[first_try:]
            raise StructureReadError(f"site occupancies sum to {exc.total:g} on one site, more than 1.") from None
        # Sites listed twice (a special position written once per equivalent image, or an atom
        # repeated by hand) sum to 2 or more; scaling every site to a total of 1 undoes that.
        del warns[first_try:]
        warns.append(f"Some sites are listed more than once (occupancy {exc.total:g} on one site); the "
                     "occupancies of each site were scaled to sum to 1.")
        structure = _parse_normalised_block(block, warns, limits, occupancy_tolerance=1e6)
        warns[:] = [w for w in warns if "sum to > 1" not in w]  # answered by the note above
        return structure


class _OccupancyExceeded(Exception):
    def __init__(self, total: float):
        super().__init__(total)
        self.total = total


def _parse_normalised_block(block: str, warns: list[str], limits: ReadLimits, occupancy_tolerance: float) -> Structure:
    with _collect_warnings(warns):
        from pymatgen.io.cif import CifParser  # imported when needed: ~0.5 s, and most CIFs take the fast path

        try:
            parser = CifParser.from_str(block, occupancy_tolerance=occupancy_tolerance)
        except Exception as exc:
            loop = isinstance(exc, ZeroDivisionError) or "zip()" in str(exc) or "multiple" in str(exc)
            detail = "a loop_ table has missing or extra values" if loop else _short(exc)
            raise StructureReadError(f"the CIF is malformed or truncated ({detail}).") from None
        data = next(iter(parser.as_dict().values()), {})
        _check_cif_data(data, limits)  # exact key case, as pymatgen reads it
        try:
            return parser.parse_structures(primitive=False, on_error="raise")[0]
        except (ValueError, KeyError, IndexError, ZeroDivisionError, NotImplementedError) as exc:
            exceeded = re.search(r"Occupancy ([\d.]+) exceeded tolerance", str(exc))
            if exceeded:
                raise _OccupancyExceeded(float(exceeded.group(1))) from None
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            if "no structures" in detail:
                detail = "no atom site has a recognisable element symbol"
            detail = _short(detail).rstrip(".")
            raise StructureReadError(f"could not build a structure from the CIF ({detail}).") from None
        finally:
            warns.extend(parser.warnings)


def _check_cif_data(data: dict, limits: ReadLimits) -> None:
    """Catch what pymatgen accepts silently or reports cryptically, before it builds the structure."""
    def values(key: str) -> list[str]:
        v = data.get(key)
        return [] if v is None else [v] if isinstance(v, str) else list(v)

    from pymatgen.io.cif import str2float

    def number(key: str, raw: str) -> float:
        try:
            return str2float(raw)
        except (ValueError, TypeError):
            hint = " (the file may be truncated)" if not raw.strip() else ""
            raise StructureReadError(f"{key} = '{raw}' is not a number{hint}.") from None

    if not values("_cell_length_a"):
        raise StructureReadError("no unit cell is given (_cell_length_a is missing).")
    for key in [f"_cell_length_{x}" for x in "abc"] + [f"_cell_angle_{x}" for x in ("alpha", "beta", "gamma")]:
        for raw in values(key):
            x = number(key, raw)
            if not math.isfinite(x):
                raise StructureReadError(f"the unit cell contains NaN or infinite numbers ({key} = {raw}).")
            if x <= 0 or ("angle" in key and x >= 180):
                raise StructureReadError(f"degenerate unit cell: {key} = {raw} is impossible.")
    xs = values("_atom_site_fract_x")
    if not xs:
        if values("_atom_site_Cartn_x"):
            raise StructureReadError("atom positions are given only as Cartesian coordinates (_atom_site_Cartn_x) "
                                     "and could not be converted (is the cell complete?).")
        raise StructureReadError("the structure contains no atoms (no _atom_site_fract_x entries).")
    if len(xs) > limits.max_sites:
        raise StructureReadError(f"the structure has {len(xs)} sites, above the limit of {limits.max_sites}.")
    # Guard against symmetry expansions so large that pymatgen would take minutes: each position
    # yields at least n_ops / 48 sites (48: largest site-symmetry order). Exact counts come later.
    n_ops = len(values("_symmetry_equiv_pos_as_xyz") or values("_space_group_symop_operation_xyz")) or 1
    positions = len(set(zip(xs, values("_atom_site_fract_y"), values("_atom_site_fract_z"))))
    if positions * n_ops // 48 > 10 * limits.max_sites:
        raise StructureReadError(f"the structure has at least {positions * n_ops // 48} sites once symmetry is "
                                 f"applied, above the limit of {limits.max_sites}.")
    for axis in "xyz":
        for raw in values(f"_atom_site_fract_{axis}"):
            if not math.isfinite(number(f"_atom_site_fract_{axis}", raw)):
                raise StructureReadError("atom coordinates contain NaN or infinite numbers.")
    unknown = []
    for sym in values("_atom_site_type_symbol"):
        m = re.fullmatch(r"([A-Za-z]{1,2})\d*[+-]?\d*", sym.strip())  # element (+ charge), e.g. "Fe3+"
        if m and not Element.is_valid_symbol(m.group(1).title()) and m.group(1).upper() not in _CIF_SYMBOL_ALIASES:
            unknown.append(sym)  # pymatgen would read e.g. "Bq" as B silently, or "Xx" as a dummy species
    if unknown:
        raise StructureReadError(f"unknown element symbol(s): {', '.join(sorted(set(unknown)))}.")


# --- checks shared by all formats ---------------------------------------------------------------

def _finish(source: str, label: str, struct: Structure, warns: list[str], limits: ReadLimits) -> LoadedCrystal:
    problem = _check_structure(struct, limits, warns)
    if problem:
        return LoadedCrystal(source, None, _dedupe(warns), f"{label}: {problem}")
    return LoadedCrystal(source, struct, _dedupe(warns), None)


def _check_structure(struct: Structure, limits: ReadLimits, warns: list[str]) -> str | None:
    n = len(struct)
    if n == 0:
        return "the structure contains no atoms."
    matrix = struct.lattice.matrix
    if not np.all(np.isfinite(matrix)):
        return "the unit cell contains NaN or infinite numbers."
    if not np.all(np.isfinite(struct.frac_coords)):
        return "atom coordinates contain NaN or infinite numbers."
    volume = float(np.linalg.det(matrix))
    if abs(volume) <= 1e-6 * float(np.prod(np.linalg.norm(matrix, axis=1))):
        return f"degenerate unit cell: its volume is {volume:.3g} Å³ (lattice vectors are zero or in one plane)."
    if volume < 0:
        return (f"the unit cell has a negative volume ({volume:.4g} Å³): the lattice vectors are left-handed "
                "(swap two of them).")
    if n > limits.max_sites:
        return f"the structure has {n} sites, above the limit of {limits.max_sites}."
    dummies = sorted({sp.symbol for sp in struct.composition if isinstance(sp, DummySpecies)})
    if dummies:
        return f"unknown element symbol(s): {', '.join(dummies)}."
    disordered = sum(not site.is_ordered for site in struct)
    if disordered:
        warns.append(f"Partially occupied sites (disordered structure): {disordered} of {n} sites.")
    if not _may_have_close_atoms(struct, _MIN_DISTANCE):  # almost every file: no neighbour search needed
        return None
    centres, others, _, dists = struct.get_neighbor_list(r=_DUPLICATE_DISTANCE)
    if len(dists) and all(struct[int(a)].species == struct[int(b)].species for a, b in zip(centres, others)):
        # Only identical atoms overlap: the same atom written twice (e.g. on a special position
        # a hair off its exact coordinates). Keep one of each cluster.
        before = len(struct)
        struct.merge_sites(tol=_DUPLICATE_DISTANCE, mode="delete")
        warns.append(f"{before - len(struct)} duplicated atom(s) within {_DUPLICATE_DISTANCE} Å of an identical "
                     "atom were merged.")
    centres, others, _, dists = struct.get_neighbor_list(r=_MIN_DISTANCE)
    if len(dists):
        i = int(np.argmin(dists))
        a, b = int(centres[i]), int(others[i])
        warns.append(f"{max(len(dists) // 2, 1)} pair(s) of atoms closer than {_MIN_DISTANCE} Å (shortest "
                     f"{dists[i]:.2f} Å, {struct[a].species_string} site {a + 1} and {struct[b].species_string} "
                     f"site {b + 1}); check for duplicated atoms.")
    return None


def _may_have_close_atoms(struct: Structure, r: float, max_sites: int = 150) -> bool:
    """False only when no two atoms (periodic images included) are closer than ``r`` (Å).

    A numpy test over the 27 neighbouring cells, ~20x cheaper than pymatgen's neighbour search
    for a small cell; it is exact when every interplanar spacing is at least ``r`` (no closer
    pair can then lie further out). Larger or thinner cells answer True, and so does a pair
    within a hair of ``r``, and the caller's exact search decides.
    """
    matrix = struct.lattice.matrix
    spacings = 1 / np.linalg.norm(np.linalg.inv(matrix).T, axis=1)
    if len(struct) > max_sites or np.any(spacings < r * (1 + 1e-6)):
        return True
    frac = struct.frac_coords
    d = frac[:, None, :] - frac[None, :, :]
    d -= np.round(d)
    cart = (d[:, :, None, :] + _NEIGHBOUR_CELLS[None, None]) @ matrix  # (n, n, 27, 3)
    dist = np.linalg.norm(cart, axis=-1)
    dist[np.arange(len(frac)), np.arange(len(frac)), _HOME_CELL] = np.inf  # an atom and itself
    return bool(dist.min() < r * (1 + 1e-6))


_NEIGHBOUR_CELLS = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
_HOME_CELL = 13  # index of (0, 0, 0) in _NEIGHBOUR_CELLS


# --- helpers ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _collect_warnings(out: list[str]) -> Iterator[None]:
    """Record pymatgen's warnings into ``out`` (user-facing ones only; the rest go to the log)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, UserWarning):
                    out.append(str(w.message))
                else:
                    logger.debug("%s: %s", w.category.__name__, w.message)


def _dedupe(items: Iterable[str]) -> list[str]:
    result: list[str] = []
    for item in items:
        text = _short(item)
        if text and text not in result and not text.startswith(_IGNORED_WARNINGS):
            result.append(text)
    return result


def _short(obj: object, limit: int = 240) -> str:
    """First line of a message, shortened; turns pymatgen's element errors into plain words."""
    lines = str(obj).strip().splitlines()
    text = lines[0].strip() if lines else ""
    for pattern, replacement in _REWORDED:
        text = pattern.sub(replacement, text)
    m = re.search(r"Element or Species from '([^']+)'|'([^']+)' is not a valid Element", str(obj))
    if m:
        text = f"unknown element symbol '{m.group(1) or m.group(2)}'"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unexpected(exc: Exception) -> str:
    return f"unexpected {type(exc).__name__}: {_short(exc)}"


def _size(n: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"
