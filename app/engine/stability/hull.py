"""Energy above a reference convex hull of formation energies, with the competing phases.

The hull ships as ``models/reference_hull.npz`` (built by
``app.engine.training.hull_builder.build_reference_hull`` from the Materials Project formation
energies of the training data): only the phases on the hull of their own chemical system are kept
(a phase above it can never bound another composition), plus every element at 0 eV/atom. A
look-up takes the phases whose elements are a subset of the query's, builds their lower convex
hull once per chemical system (qhull, cached), and reads the hull energy at the composition as the
highest of the lower facets' planes there; that facet's phases are the decomposition.

Energies are formation energies per atom (eV/atom) against the elemental references, on the
legacy Materials Project scale the hull was built from.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from app.engine.core.errors import ModelError
from app.engine.core.paths import models_dir

logger = logging.getLogger(__name__)

HULL_NAME = "reference_hull"
HULL_FILE = "reference_hull.npz"
#: Atom fractions below this are not named in a decomposition.
MIN_PHASE_FRACTION = 1e-4


@dataclass
class HullResult:
    """Position of one composition against the hull.

    ``e_above_hull`` (eV/atom) is negative when the energy lies below the reference hull (a
    prediction of a new stable phase); ``decomposition`` names the hull phases at that
    composition (``"SrO + TiO2"``; a single formula when the composition is a hull phase itself).
    Both are None and ``error`` says why when the composition cannot be placed.
    """

    e_above_hull: float | None
    decomposition: str | None
    error: str | None = None
    hull_energy: float | None = None


class ReferenceHull:
    """Phases of the reference hull: compositions (atom fractions) and formation energies.

    Parameters
    ----------
    elements : sequence of str
        Element symbols, the columns of ``fractions``.
    fractions : ndarray, shape (n_phases, n_elements)
        Atom fractions of each phase (rows sum to 1).
    energies : ndarray, shape (n_phases,)
        Formation energy per atom of each phase (eV/atom).
    formulas, ids : sequence of str
        Reduced formula and source id of each phase.
    """

    def __init__(self, elements, fractions, energies, formulas, ids):
        self.elements = [str(e) for e in elements]
        self._column = {symbol: i for i, symbol in enumerate(self.elements)}
        self.fractions = np.asarray(fractions, dtype=float)
        self.energies = np.asarray(energies, dtype=float)
        self.formulas = [str(f) for f in formulas]
        self.ids = [str(i) for i in ids]
        # Chemical-system filter: bit i of a phase's mask word i // 64 is set when it has element column i.
        present = self.fractions > 0
        self._masks = np.zeros((len(self.energies), (len(self.elements) + 63) // 64), dtype=np.uint64)
        for word in range(self._masks.shape[1]):
            block = present[:, 64 * word: 64 * (word + 1)].astype(np.uint64)
            self._masks[:, word] = (block << np.arange(block.shape[1], dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
        self._cached = lru_cache(maxsize=65536)(self._place_fractions)
        self._facet_cache: dict[tuple, object] = {}

    @classmethod
    def load(cls, folder: Path | None = None) -> "ReferenceHull":
        """The shipped hull (``models/reference_hull.npz``); ModelError when it is missing."""
        path = (folder or models_dir()) / HULL_FILE
        if not path.is_file():
            raise ModelError(f"The reference convex hull ({path.name}) is missing from {path.parent}; "
                             "rebuild it with 'crystal-designer build-index'.")
        began = time.perf_counter()
        with np.load(path, allow_pickle=False) as data:
            hull = cls(data["elements"], _dense(data), data["energies"], data["formulas"], data["ids"])
        logger.debug("reference hull: %d phases loaded in %.3f s", len(hull.energies), time.perf_counter() - began)
        return hull

    def save(self, path: Path) -> Path:
        """Write the compact ``.npz`` form (sparse fractions) to ``path``."""
        rows, cols = np.nonzero(self.fractions)
        np.savez_compressed(path, elements=np.array(self.elements), energies=self.energies.astype(np.float32),
                            formulas=np.array(self.formulas), ids=np.array(self.ids),
                            entry_of=rows.astype(np.int32), element_of=cols.astype(np.int16),
                            fraction=self.fractions[rows, cols].astype(np.float64))
        return path

    def __len__(self) -> int:
        return len(self.energies)

    def without(self, ids) -> "ReferenceHull":
        """A copy without the phases of ``ids`` (to evaluate held-out entries honestly)."""
        drop = set(ids)
        keep = [i for i, name in enumerate(self.ids) if name not in drop]
        return ReferenceHull(self.elements, self.fractions[keep], self.energies[keep],
                             [self.formulas[i] for i in keep], [self.ids[i] for i in keep])

    def e_above_hull(self, composition, formation_energy_per_atom: float | None) -> HullResult:
        """Energy above the hull (eV/atom) of ``composition`` at ``formation_energy_per_atom``.

        ``composition`` is a pymatgen Composition, a Structure or a formula string.
        """
        from pymatgen.core import Composition

        if formation_energy_per_atom is None or not np.isfinite(formation_energy_per_atom):
            return HullResult(None, None, "no formation energy to place on the hull")
        composition = getattr(composition, "composition", composition)
        composition = Composition(composition) if isinstance(composition, str) else composition
        amounts = composition.fractional_composition.get_el_amt_dict()
        missing = sorted(symbol for symbol in amounts if symbol not in self._column)
        if missing:
            return HullResult(None, None, f"no reference energy for {', '.join(missing)} in the hull")
        key = tuple(sorted((symbol, round(x, 6)) for symbol, x in amounts.items() if x > 0))
        hull_energy, decomposition = self._cached(key)
        if hull_energy is None:
            return HullResult(None, None, decomposition)
        return HullResult(float(formation_energy_per_atom) - hull_energy, decomposition, None, hull_energy)

    def _place_fractions(self, key: tuple) -> tuple[float | None, str]:
        """Hull energy (eV/atom) and decomposition text at the composition ``key``."""
        columns = tuple(self._column[symbol] for symbol, _ in key)
        x = np.array([amount for _, amount in key])
        x = x / x.sum()
        facets = self._facets(columns)
        if isinstance(facets, str):
            return None, facets
        candidates, vertices, planes = facets
        if vertices is None:  # one element: its lowest phase
            best = int(np.argmin(self.energies[candidates]))
            return float(self.energies[candidates[best]]), self.formulas[candidates[best]]
        point = np.append(x[1:], 1.0)
        values = planes @ point
        best = int(np.argmax(values))
        simplex = self.fractions[np.ix_(candidates[vertices[best]], columns)]
        weights = np.linalg.lstsq(simplex.T, x, rcond=None)[0]
        order = np.argsort(-weights)
        phases = [self.formulas[candidates[vertices[best][i]]] for i in order if weights[i] > MIN_PHASE_FRACTION]
        return float(values[best]), " + ".join(dict.fromkeys(phases))

    def _facets(self, columns: tuple):
        """Lower-hull facets of the phases in the chemical system ``columns`` (cached per system):
        ``(phase rows, facet vertex indices, planes)`` with energy = planes @ (x[1:], 1); or why not."""
        cached = self._facet_cache.get(columns)
        if cached is not None:
            return cached
        query = np.zeros(self._masks.shape[1], dtype=np.uint64)
        for column in columns:
            query[column // 64] |= np.uint64(1) << np.uint64(column % 64)
        candidates = np.flatnonzero(~((self._masks & ~query).any(axis=1)))
        if len(candidates) == 0:
            found = "no hull phase in this chemical system"
        elif len(columns) == 1:
            found = (candidates, None, None)
        else:
            found = self._lower_hull(candidates, columns)
        self._facet_cache[columns] = found
        return found

    def _lower_hull(self, candidates: np.ndarray, columns: tuple):
        from scipy.spatial import ConvexHull, QhullError

        points = np.column_stack([self.fractions[np.ix_(candidates, columns[1:])], self.energies[candidates]])
        # A point far above the centre makes the hull full-dimensional; facets touching it are not lower facets.
        lid = np.append(points[:, :-1].mean(axis=0), points[:, -1].max() + 1e4)
        try:
            hull = ConvexHull(np.vstack([points, lid]), qhull_options="Qt")
        except QhullError as error:
            return f"the hull could not be evaluated here ({str(error).splitlines()[0]})"
        lower = (hull.equations[:, -2] < -1e-12) & ~np.any(hull.simplices == len(points), axis=1)
        normals = hull.equations[lower]
        # n·(y, E) + offset = 0  ->  E = -(n_y·y + offset) / n_E
        planes = -np.column_stack([normals[:, :-2], normals[:, -1]]) / normals[:, -2:-1]
        return candidates, hull.simplices[lower], planes


def _dense(data) -> np.ndarray:
    fractions = np.zeros((len(data["energies"]), len(data["elements"])))
    fractions[data["entry_of"], data["element_of"]] = data["fraction"]
    return fractions


def add_hull_fields(records: list[dict], hull: "ReferenceHull | None", hull_problem: str | None = None,
                    source: str | None = None) -> None:
    """Give each prediction record ``e_above_hull`` (eV/atom), ``decomposition``, ``hull_error``
    and ``hull_energy`` (which formation energy was placed: a key of ``HULL_ENERGY_SOURCES``).

    Uses the record's ``formula`` and predicted ``formation_energy_per_atom``, or for a relaxed
    record (``relaxation.formation_energy_per_atom``, CHGNet's) the ``source`` route (default
    ``DEFAULT_HULL_ENERGY``); with no ``hull`` every record gets ``hull_problem`` as its reason.
    """
    from app.engine.stability.formation import DEFAULT_HULL_ENERGY, hull_formation

    for record in records:
        relaxation = record.get("relaxation") or {}
        energy, used = hull_formation(record.get("formation_energy_per_atom"),
                                      relaxation.get("formation_energy_per_atom"), source or DEFAULT_HULL_ENERGY)
        if hull is None:
            result = HullResult(None, None, hull_problem or "no reference hull in this installation")
        elif record.get("formula") is None or energy is None:
            result = HullResult(None, None, "no predicted formation energy")
        else:
            result = hull.e_above_hull(record["formula"], energy)
        record["e_above_hull"] = result.e_above_hull
        record["decomposition"] = result.decomposition
        record["hull_error"] = result.error
        record["hull_energy"] = used if result.error is None else None
