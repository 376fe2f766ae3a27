"""Novelty look-up: is a candidate a crystal the models were trained on, or the base itself?

A candidate is novel when no known structure of its reduced formula matches it by
StructureMatcher (after relaxation when it was relaxed). The known structures are those of every
training set, stored compactly in ``models/structure_index.npz`` (written by
``crystal-designer build-index``; one manifest entry ``structure_index``): lattices, element
numbers and fractional coordinates, grouped by reduced formula, so the look-up needs neither the
data nor a parser of it.

The older ``training_index.json.gz`` (reduced formula → space groups) is still readable with
:class:`TrainingIndex`; it tells formula + space-group pairs only and no longer decides novelty.
"""

from __future__ import annotations

import gzip
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.engine.core.errors import ModelError
from app.engine.core.paths import models_dir

logger = logging.getLogger(__name__)

INDEX_FILE = "training_index.json.gz"
STRUCTURE_INDEX_NAME = "structure_index"
STRUCTURE_INDEX_FILE = "structure_index.npz"

#: StructureMatcher tolerances for "same crystal": those of the generator's uniqueness test, and
#: loose enough that a distorted copy (e.g. a Cm-distorted cubic perovskite) still matches its
#: parent; volumes are scaled, since relaxed, decoded and DFT cells differ in size.
MATCH_TOLERANCES = {"ltol": 0.3, "stol": 0.5, "angle_tol": 10}

NOVEL, BASE, KNOWN = "novel", "base", "known"

#: Fractional coordinates are stored as multiples of 1/65536 of the cell (≤ 0.0003 Å in a 20 Å
#: cell, far below the matcher's tolerance), which halves the shipped file.
COORDINATE_STEPS = 65536


class TrainingIndex:
    """Lookup of known (formula, space group) pairs."""

    def __init__(self, path: Path | None = None):
        path = path or models_dir() / INDEX_FILE
        with gzip.open(path, "rt") as handle:
            self._formulas: dict[str, dict[str, list[str]]] = json.load(handle)["formulas"]

    def known(self, reduced_formula: str, space_group: int) -> bool:
        return str(space_group) in self._formulas.get(reduced_formula, {})

    def ids(self, reduced_formula: str) -> list[str]:
        return [i for ids in self._formulas.get(reduced_formula, {}).values() for i in ids]


@dataclass(frozen=True)
class Novelty:
    """Outcome of a novelty look-up.

    Attributes
    ----------
    status : str
        ``novel``, ``base`` (matches the base structure) or ``known`` (matches a training crystal).
    matched_id : str or None
        Material id of the matching training crystal (``known``).
    """

    status: str
    matched_id: str | None = None

    @property
    def is_novel(self) -> bool:
        return self.status == NOVEL

    def label(self) -> str:
        """Short text for tables: ``novel``, ``the base``, ``known (mp-5229)``."""
        if self.status == BASE:
            return "the base"
        if self.status == KNOWN:
            return f"known ({self.matched_id})" if self.matched_id else "known"
        return "novel"


def structure_matcher():
    """The matcher that decides "same crystal" for novelty (see :data:`MATCH_TOLERANCES`)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(**MATCH_TOLERANCES, scale=True, attempt_supercell=False)


def same_crystal(a, b, matcher=None) -> bool:
    """True if structures ``a`` and ``b`` are the same crystal by :func:`structure_matcher`."""
    matcher = matcher or structure_matcher()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(matcher.fit(a, b))
        except Exception as error:  # the matcher fails on degenerate cells; those are not a match
            logger.debug("structure matcher failed: %s", error)
            return False


class StructureIndex:
    """Known crystals grouped by reduced formula (see module docstring).

    Parameters
    ----------
    formulas : sequence of str, shape (F,)
        Reduced formulas.
    formula_of : ndarray of int, shape (N,)
        Index into ``formulas`` of each known structure.
    ids : sequence of str, shape (N,)
        Material ids.
    lattices : ndarray, shape (N, 3, 3), Å
    site_offsets : ndarray of int, shape (N + 1,)
        Sites of structure ``n`` are ``site_offsets[n]:site_offsets[n + 1]``.
    numbers : ndarray of int, shape (M,)
        Atomic numbers of all sites.
    frac_coords : ndarray, shape (M, 3)
        Fractional coordinates, as floats or quantised to uint16 (units of 1/65536 of the cell).
    """

    def __init__(self, formulas, formula_of, ids, lattices, site_offsets, numbers, frac_coords):
        self.formulas = [str(f) for f in formulas]
        self.ids = [str(i) for i in ids]
        self._lattices = np.asarray(lattices, dtype=np.float64)
        self._offsets = np.asarray(site_offsets, dtype=np.int64)
        self._numbers = np.asarray(numbers, dtype=np.int64)
        frac_coords = np.asarray(frac_coords)
        scale = COORDINATE_STEPS if frac_coords.dtype == np.uint16 else 1.0
        self._coords = frac_coords.astype(np.float64) / scale
        order = np.argsort(formula_of, kind="stable")
        bounds = np.searchsorted(np.asarray(formula_of)[order], np.arange(len(self.formulas) + 1))
        self._by_formula = {formula: order[bounds[k]:bounds[k + 1]] for k, formula in enumerate(self.formulas)}
        self._matcher = structure_matcher()

    @classmethod
    def load(cls, folder: Path | None = None) -> "StructureIndex":
        """The shipped index, checked against its manifest entry (sha256)."""
        from app.engine.core.registry import verified_weights_path

        path, _entry = verified_weights_path(STRUCTURE_INDEX_NAME, folder)
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["formulas"], data["formula_of"], data["ids"], data["lattices"],
                           data["site_offsets"], data["numbers"], data["frac_coords"])
        except (OSError, KeyError, ValueError) as error:
            raise ModelError(f"The structure index {path} cannot be read: {error}") from error

    @classmethod
    def from_structures(cls, entries) -> "StructureIndex":
        """Index of ``(material id, Structure)`` pairs (tests, the builder)."""
        arrays = index_arrays(entries)
        return cls(**arrays)

    def __len__(self) -> int:
        return len(self.ids)

    def structures_of(self, reduced_formula: str) -> list[tuple[str, object]]:
        """``(material id, Structure)`` of every known crystal with this reduced formula."""
        from pymatgen.core import Lattice, Structure

        out = []
        for n in self._by_formula.get(reduced_formula, ()):
            sites = slice(self._offsets[n], self._offsets[n + 1])
            out.append((self.ids[n], Structure(Lattice(self._lattices[n]), self._numbers[sites].tolist(),
                                               self._coords[sites])))
        return out

    def match(self, structure) -> str | None:
        """Material id of a known crystal matching ``structure``, or None."""
        for material_id, known in self.structures_of(structure.composition.reduced_formula):
            if same_crystal(structure, known, self._matcher):
                return material_id
        return None

    def novelty(self, structure, base=None) -> Novelty:
        """Whether ``structure`` is the base, a known crystal, or novel."""
        if base is not None and base.composition.reduced_formula == structure.composition.reduced_formula \
                and same_crystal(structure, base, self._matcher):
            return Novelty(BASE)
        matched = self.match(structure)
        return Novelty(KNOWN, matched) if matched else Novelty(NOVEL)


def index_arrays(entries) -> dict[str, np.ndarray]:
    """Compact arrays of ``(material id, Structure)`` pairs, as :class:`StructureIndex` takes them.

    Coordinates are quantised to uint16 (see :data:`COORDINATE_STEPS`).
    """
    formulas: dict[str, int] = {}
    formula_of, ids, lattices, offsets, numbers, coords = [], [], [], [0], [], []
    for material_id, structure in entries:
        formula = structure.composition.reduced_formula
        formula_of.append(formulas.setdefault(formula, len(formulas)))
        ids.append(material_id)
        lattices.append(structure.lattice.matrix)
        numbers.extend(site.specie.Z for site in structure)
        coords.append(np.mod(structure.frac_coords, 1.0))
        offsets.append(offsets[-1] + len(structure))
    return {
        "formulas": np.array(list(formulas), dtype=str),
        "formula_of": np.array(formula_of, dtype=np.int32),
        "ids": np.array(ids, dtype=str),
        "lattices": np.array(lattices, dtype=np.float32).reshape(-1, 3, 3),
        "site_offsets": np.array(offsets, dtype=np.int32),
        "numbers": np.array(numbers, dtype=np.uint8),
        "frac_coords": np.minimum(np.rint((np.concatenate(coords) if coords else np.zeros((0, 3)))
                                          * COORDINATE_STEPS), COORDINATE_STEPS - 1).astype(np.uint16),
    }
