"""Writing crystals and their predictions to disk: CIF files plus a CSV/JSON summary."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from app.engine.core.errors import CrystalDesignerError
from app.engine.core.property_table import PROPERTY_KEYS

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
logger = logging.getLogger(__name__)

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


#: Symmetry precision (Å) the symmetrised structure is written with: its operations hold to
#: rounding, so a tight tolerance finds exactly the group it was symmetrised to, no more.
_WRITTEN_SYMPREC = 1e-4
#: Largest distance (Å) between a written site and the site a CIF reader rebuilds from the file.
_ROUND_TRIP_TOLERANCE = 1e-3


def write_cif(structure, path: Path, symprec: float | None = 0.01) -> Path:
    """Write ``structure`` as a CIF that reads back to the same crystal.

    See :func:`cif_text` for what is written.

    Parameters
    ----------
    structure : Structure
        The crystal (pymatgen).
    path : Path
        The file to write (overwritten).
    symprec : float or None
        Symmetry tolerance in Å; None writes P1.

    Returns
    -------
    Path
        ``path``.
    """
    Path(path).write_text(cif_text(structure, symprec))
    return Path(path)


def cif_text(structure, symprec: float | None = 0.01) -> str:
    """CIF text of ``structure``: with its symmetry at ``symprec`` when that reads back, else P1.

    Symmetry found at a tolerance is only approximate in the structure itself: writing the
    structure's own coordinates with those operations makes readers rebuild images that miss the
    listed sites (a slightly monoclinic cell read back with twice the atoms). So the structure is
    first symmetrised in its own cell (:func:`symmetrised_structure`: cell and positions moved by at
    most about ``symprec`` so that the operations hold exactly, with rational translations; same
    cell setting, same sites in the same order), then written with the operations found at a tight
    tolerance. The text is parsed again in memory (pymatgen's ``CifParser``); unless it gives the
    same composition, the same number of sites and the same positions (within 0.001 Å), the
    structure is written in P1 with its coordinates unchanged. Disordered structures are written in
    P1.

    Parameters
    ----------
    structure : Structure
        The crystal (pymatgen).
    symprec : float or None
        Symmetry tolerance in Å; None writes P1.

    Returns
    -------
    str
        The CIF text (one data block).
    """
    from pymatgen.io.cif import CifWriter

    if symprec is not None and structure.is_ordered:
        try:
            symmetric = symmetrised_structure(structure, symprec)
            text = str(CifWriter(symmetric, symprec=_WRITTEN_SYMPREC, refine_struct=False))
            if _reads_back(text, symmetric):
                return text
            logger.info("%s: the CIF with symmetry did not read back to the same sites; written in P1",
                        structure.composition.reduced_formula)
        except Exception as error:  # symmetry finding can fail on odd cells; P1 is always valid
            logger.info("%s: no symmetrised CIF (%s); written in P1", structure.composition.reduced_formula, error)
    return str(CifWriter(structure))


def symmetrised_structure(structure, symprec: float = 0.01, max_rounds: int = 4):
    """``structure`` with its symmetry at ``symprec`` made exact, in the same cell setting.

    spglib finds the operations (rotations ``W`` and translations ``w`` in the structure's own
    fractional coordinates); the metric tensor is averaged over the rotations (``mean W^T G W``,
    the cell strained as little as that needs) and each site moved to the mean of its images
    ``W x + w`` under all operations. Found translations are fits, so this repeats until the
    sites stop moving (twice is usually enough). When an origin shift within ``symprec`` makes every
    translation a multiple of 1/24, the sites are shifted and the exact translations used.

    Parameters
    ----------
    structure : Structure
        An ordered crystal.
    symprec : float
        Symmetry tolerance in Å (spglib's).
    max_rounds : int
        Most rounds of finding and averaging.

    Returns
    -------
    Structure
        Same species (oxidation states and site properties kept) in the same order and cell
        setting; lattice and fractional coordinates moved by at most about ``symprec``.

    Raises
    ------
    ValueError
        When spglib finds no symmetry, the operations do not map the sites one to one, or the
        symmetrisation moved a site by more than ``2 * symprec`` (it did not keep the structure).
    """
    import spglib
    from pymatgen.core import Lattice, Structure

    kinds: dict[str, int] = {}
    numbers = np.array([kinds.setdefault(site.species_string, len(kinds) + 1) for site in structure])
    matrix, frac = structure.lattice.matrix.copy(), structure.frac_coords.copy()
    for _ in range(max_rounds):
        dataset = spglib.get_symmetry_dataset((matrix, frac, numbers), symprec=symprec)
        if dataset is None:
            raise ValueError(spglib.get_error_message())
        rotations, translations = dataset.rotations, dataset.translations
        shift, exact = _rational_origin(dataset, matrix, symprec)
        if exact is not None:
            frac, translations = frac + shift, exact
        matrix = _symmetric_lattice(matrix, rotations)
        new_frac = _symmetric_positions(frac, numbers, matrix, rotations, translations)
        change = np.abs(new_frac - frac).max()
        frac = new_frac
        if change < 1e-10:
            break
    shift = frac - structure.frac_coords
    moved = np.linalg.norm((shift - np.round(shift)) @ structure.lattice.matrix, axis=1)
    if moved.size and moved.max() > 2 * symprec:
        raise ValueError(f"symmetrising moved a site by {moved.max():.3g} Å")
    return Structure(Lattice(matrix), structure.species, frac, site_properties=structure.site_properties or None)


_ORIGIN_GRID = 24  # translations of every space group in a standard setting are multiples of 1/24


def _rational_origin(dataset, matrix: np.ndarray, symprec: float) -> tuple[np.ndarray, np.ndarray | None]:
    """A small origin shift (fractional) after which the translations are exact multiples of 1/24.

    spglib's standard setting has ``x_s = P x + p``; shifting the sites by ``P^-1 p`` puts the
    standard origin at the cell's origin, and any further shift by multiples of 1/24 keeps the
    translations rational. Translations fitted to a distorted structure (``1.8e-5``, ``0.99892``)
    would otherwise be written as ``0`` or ``923/924``, and readers rebuild images off the sites.

    Returns
    -------
    shift : ndarray, shape (3,)
        Fractional shift of every site (zeros when none is used).
    translations : ndarray, shape (n_ops, 3), or None
        The exact translations after the shift; None when no shift within ``symprec`` (Å) gives
        translations on the grid (the fitted ones are used as they are).
    """
    shift = np.linalg.solve(dataset.transformation_matrix, dataset.origin_shift)
    shift -= np.round(shift * _ORIGIN_GRID) / _ORIGIN_GRID
    if np.linalg.norm(shift @ matrix) > symprec:
        return np.zeros(3), None
    shifted = dataset.translations + shift - shift @ np.transpose(dataset.rotations, (0, 2, 1))
    exact = np.round(shifted * _ORIGIN_GRID) / _ORIGIN_GRID
    if np.linalg.norm((shifted - exact) @ matrix, axis=1).max() > 2 * symprec:
        return np.zeros(3), None
    return shift, exact


def _symmetric_lattice(matrix: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Cell vectors (rows, Å) whose metric is the rotation average of ``matrix``'s, same orientation."""
    metric = matrix @ matrix.T
    symmetric = np.mean([w.T @ metric @ w for w in rotations], axis=0)
    # A' = L' L^-1 A with G = L L^T, G' = L' L'^T: A' A'^T = G' and A' is A strained, not rotated.
    return np.linalg.cholesky(symmetric) @ np.linalg.solve(np.linalg.cholesky(metric), matrix)


def _symmetric_positions(frac: np.ndarray, numbers: np.ndarray, matrix: np.ndarray, rotations: np.ndarray,
                         translations: np.ndarray) -> np.ndarray:
    """Each site moved to the mean of its images under the operations (fractional, shape (n, 3))."""
    n = len(frac)
    offsets = np.zeros_like(frac)
    same_kind = numbers[:, None] == numbers[None, :]
    for rotation, translation in zip(rotations, translations):
        images = frac @ rotation.T + translation  # image of site i, (n, 3)
        delta = images[:, None, :] - frac[None, :, :]  # (i, j, 3)
        delta -= np.round(delta)
        distance = np.linalg.norm(delta @ matrix, axis=2)
        distance[~same_kind] = np.inf
        target = distance.argmin(axis=1)  # site j that image i lands on
        if len(set(target.tolist())) != n:
            raise ValueError("the symmetry operations do not map the sites one to one")
        offsets[target] += delta[np.arange(n), target]
    return frac + offsets / len(rotations)


def _reads_back(text: str, written) -> bool:
    """True when pymatgen's CifParser rebuilds ``written`` from ``text`` (composition, sites, positions)."""
    import warnings

    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            [read] = CifParser.from_str(text).parse_structures(primitive=False)
        except Exception:
            return False
    return same_sites(read, written, _ROUND_TRIP_TOLERANCE)


def same_sites(first, second, tolerance: float) -> bool:
    """True when two structures in the same cell hold the same species at the same places.

    Parameters
    ----------
    first, second : Structure
        Compared in ``second``'s lattice; the lattices must agree to ``tolerance`` too.
    tolerance : float
        Largest distance in Å between matched sites, and between matched cell vectors' ends.

    Returns
    -------
    bool
        Same number of sites, the same composition, and every site of each within
        ``tolerance`` of a site of the same species of the other (periodic images included).
    """
    if len(first) != len(second) or first.composition != second.composition:
        return False
    if np.abs(np.asarray(first.lattice.abc) - second.lattice.abc).max() > tolerance or \
            np.abs(np.asarray(first.lattice.angles) - second.lattice.angles).max() > 0.01:
        return False
    for symbol in {site.species_string for site in second}:
        a = np.array([site.frac_coords for site in first if site.species_string == symbol])
        b = np.array([site.frac_coords for site in second if site.species_string == symbol])
        if len(a) != len(b):
            return False
        distances = second.lattice.get_all_distances(a, b)
        if distances.min(axis=0).max() > tolerance or distances.min(axis=1).max() > tolerance:
            return False
    return True


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
