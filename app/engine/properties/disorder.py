"""Predicting disordered crystals (partial occupancy, mixed sites, vacancies) through an approximation.

The property models learnt from ordered crystals, so a disordered structure is predicted through

- ``approximant`` (default): an *ordered approximant*. Occupancies are rounded to the smallest
  supercell (at most :data:`MAX_SUPERCELL_SITES` sites) in which every species fills a whole
  number of sites; up to :data:`N_ORDERINGS` distinct random orderings of that supercell
  (vacancies = removed sites) are predicted and the one with the lowest predicted formation
  energy is chosen (the most stable arrangement is the likeliest ground state). All orderings
  are kept, so the user can pick another.
- ``virtual_crystal``: one graph on the disordered sites whose atom features are the
  occupancy-weighted mean of the species' features (a vacancy adds nothing).

``crystal-designer``'s measurement (``python -m app.engine.training.evaluate_disorder``) mixes
the sites of two elements of held-out ordered crystals and compares both against the DFT labels
of the ordered originals; the default is the method that measured better there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from pymatgen.core import Structure

from app.engine.core.errors import StructureReadError
from app.engine.properties.graph import build_graph, collate
from app.engine.properties.predictor import PropertyPredictor, graph_for_prediction

logger = logging.getLogger(__name__)

METHODS = ("approximant", "virtual_crystal")
DEFAULT_METHOD = "approximant"
#: Largest ordered supercell tried (sites before removing vacancies).
MAX_SUPERCELL_SITES = 96
#: Most orderings predicted per structure, and the time they may take (s).
N_ORDERINGS = 12
TIME_LIMIT_S = 20.0
#: Largest change of an occupancy accepted when rounding to the supercell's whole sites.
OCCUPANCY_TOLERANCE = 0.02


@dataclass
class Ordering:
    """One ordered approximant and its eight predicted properties."""

    structure: Structure
    values: dict[str, float | None]

    @property
    def formation_energy(self) -> float:
        return float(self.values["formation_energy_per_atom"])


@dataclass
class DisorderPrediction:
    """How a disordered structure was predicted.

    Attributes
    ----------
    method : str
        ``approximant`` or ``virtual_crystal``.
    values : dict
        The eight properties reported (those of the chosen ordering for ``approximant``).
    note : str
        One sentence for the user saying what was approximated.
    orderings : list of Ordering
        Approximants, lowest predicted formation energy first (empty for ``virtual_crystal``).
    chosen : int
        Index of the reported ordering in ``orderings``.
    """

    method: str
    values: dict[str, float | None]
    note: str
    orderings: list[Ordering] = field(default_factory=list)
    chosen: int = 0
    supercell: tuple[int, int, int] = (1, 1, 1)


# --- sublattices and supercells -----------------------------------------------------------------

def _occupancies(site) -> dict[str, float]:
    return {sp.symbol if hasattr(sp, "symbol") else str(sp): float(x) for sp, x in site.species.items()}


def disorder_summary(structure: Structure) -> str:
    """``"Na0.667K0.333 on 4 sites; Fe0.9 (vacancies 0.1) on 2 sites"`` for the disordered sublattices."""
    groups: dict[tuple, int] = {}
    for site in structure:
        if not site.is_ordered:
            key = tuple(sorted((s, round(x, 3)) for s, x in _occupancies(site).items()))
            groups[key] = groups.get(key, 0) + 1
    parts = []
    for key, count in groups.items():
        total = sum(x for _, x in key)
        text = "".join(f"{s}{x:g}" for s, x in key)
        if total < 0.999:
            text += f" (vacancies {1 - total:.3g})"
        parts.append(f"{text} on {count} site{'s' if count > 1 else ''}")
    return "; ".join(parts)


def _axis_factors(structure: Structure, multiplier: int) -> tuple[int, int, int]:
    """Split ``multiplier`` over the lattice axes, always lengthening the currently shortest one."""
    factors = [1, 1, 1]
    primes, n, p = [], multiplier, 2
    while n > 1:
        while n % p == 0:
            primes.append(p)
            n //= p
        p += 1
    lengths = list(structure.lattice.abc)
    for prime in sorted(primes, reverse=True):
        axis = int(np.argmin([lengths[i] * factors[i] for i in range(3)]))
        factors[axis] *= prime
    return factors[0], factors[1], factors[2]


def _sublattices(structure: Structure) -> dict[tuple, list[int]]:
    """Site indices grouped by their (rounded) occupancies; ordered sites are groups too."""
    groups: dict[tuple, list[int]] = {}
    for index, site in enumerate(structure):
        key = tuple(sorted((s, round(x, 4)) for s, x in _occupancies(site).items()))
        groups.setdefault(key, []).append(index)
    return groups


def commensurate_multiplier(structure: Structure, max_sites: int = MAX_SUPERCELL_SITES) -> tuple[int, float]:
    """Smallest supercell multiplier whose whole-site counts match the occupancies.

    Returns
    -------
    (int, float)
        The multiplier and the largest occupancy change its rounding needs; the multiplier with
        the smallest change within ``max_sites`` when none is within :data:`OCCUPANCY_TOLERANCE`.
    """
    groups = _sublattices(structure)
    best = (1, np.inf)
    for multiplier in range(1, max(1, max_sites // len(structure)) + 1):
        error = 0.0
        for key, indices in groups.items():
            n_sites = multiplier * len(indices)
            for _, x in key:
                error = max(error, abs(round(x * n_sites) / n_sites - x))
            if sum(round(x * n_sites) for _, x in key) > n_sites:
                error = np.inf
        if error <= OCCUPANCY_TOLERANCE:
            return multiplier, error
        if error < best[1]:
            best = (multiplier, error)
    return best


# --- orderings ----------------------------------------------------------------------------------

def random_orderings(structure: Structure, n_orderings: int = N_ORDERINGS, seed: int = 0,
                     max_sites: int = MAX_SUPERCELL_SITES) -> tuple[list[Structure], tuple[int, int, int], float]:
    """Distinct random orderings of the smallest commensurate supercell of ``structure``.

    Returns
    -------
    (list of Structure, (int, int, int), float)
        The ordered structures, the supercell's axis factors and the largest occupancy change.

    Raises
    ------
    StructureReadError
        When no supercell within ``max_sites`` approximates the occupancies to 0.1.
    """
    multiplier, error = commensurate_multiplier(structure, max_sites)
    if error > 0.1:
        raise StructureReadError(
            f"the occupancies ({disorder_summary(structure)}) cannot be approximated by whole sites in a "
            f"supercell of at most {max_sites} sites.")
    factors = _axis_factors(structure, multiplier)
    supercell = structure.copy()
    supercell.make_supercell(factors)
    groups = _sublattices(supercell)
    rng = np.random.default_rng(seed)
    seen, orderings = set(), []
    for _attempt in range(4 * n_orderings):
        species: list[str | None] = [None] * len(supercell)
        for key, indices in groups.items():
            labels: list[str | None] = []
            for symbol, x in key:
                labels += [symbol] * int(round(x * len(indices)))
            labels += [None] * (len(indices) - len(labels))  # vacancies
            for index, label in zip(indices, rng.permutation(np.array(labels, dtype=object))):
                species[index] = label
        signature = tuple(species)
        if signature in seen:
            continue
        seen.add(signature)
        keep = [i for i, s in enumerate(species) if s is not None]
        orderings.append(Structure(supercell.lattice, [species[i] for i in keep],
                                   supercell.frac_coords[keep]))
        if len(orderings) == n_orderings:
            break
    return orderings, factors, error


def predict_approximant(predictor: PropertyPredictor, structure: Structure, n_orderings: int = N_ORDERINGS,
                        time_limit_s: float = TIME_LIMIT_S) -> DisorderPrediction:
    """Predict ``structure`` through its ordering with the lowest predicted formation energy."""
    candidates, factors, error = random_orderings(structure, n_orderings)
    started, graphs = time.monotonic(), []
    for candidate in candidates:  # graphs cost more than the models: the time cap applies here
        graphs.append(predictor.featurise(candidate))
        if time.monotonic() - started > time_limit_s:
            break
    raw = predictor.predict_graphs(graphs)
    orderings = [Ordering(candidate, predictor.assemble(candidate, {k: v[row] for k, v in raw.items()}).values)
                 for row, candidate in enumerate(candidates[: len(graphs)])]
    orderings.sort(key=lambda o: o.formation_energy)
    cell = "×".join(str(f) for f in factors)
    rounding = f", occupancies rounded by up to {error:.2f}" if error > 1e-3 else ""
    note = (f"Disordered structure ({disorder_summary(structure)}): predicted for an ordered approximant, the "
            f"lowest predicted formation energy of {len(orderings)} orderings of a {cell} supercell"
            f"{rounding}.")
    return DisorderPrediction("approximant", dict(orderings[0].values), note, orderings, 0, factors)


def virtual_crystal_features(structure: Structure) -> np.ndarray:
    """Occupancy-weighted element features of each site, shape ``(n_sites, FEATURE_LENGTH)``."""
    from pymatgen.core import Element

    from app.engine.core.elements import element_feature_table

    table = element_feature_table()
    features = np.zeros((len(structure), table.shape[1]), dtype=np.float32)
    for i, site in enumerate(structure):
        for specie, x in site.species.items():
            features[i] += float(x) * table[Element(specie.symbol).Z]
    return features


def predict_virtual_crystal(predictor: PropertyPredictor, structure: Structure) -> DisorderPrediction:
    """Predict ``structure`` as one graph with occupancy-weighted atom features."""
    import torch

    from app.engine.properties.cgcnn import batch_to_tensors

    majority = Structure(structure.lattice, [max(site.species.items(), key=lambda kv: kv[1])[0] for site in structure],
                         structure.frac_coords)
    batch = batch_to_tensors(collate([build_graph(majority)]), predictor.device)
    batch["atom_features"] = torch.from_numpy(virtual_crystal_features(structure)).to(predictor.device)
    # The predictor's own precision (bfloat16 autocast on some CPUs), so both paths agree.
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=getattr(predictor, "precision", "") == "bfloat16")
    with torch.inference_mode(), autocast:
        raw = {name: model.predict(batch).float().cpu().numpy()[0] for name, model in predictor.models.items()}
    values = predictor.assemble(structure, raw).values
    note = (f"Disordered structure ({disorder_summary(structure)}): predicted as a virtual crystal "
            "(occupancy-weighted atom features on the disordered sites).")
    return DisorderPrediction("virtual_crystal", values, note)


def predict_disordered(predictor: PropertyPredictor, structure: Structure,
                       method: str = DEFAULT_METHOD) -> DisorderPrediction:
    """Eight properties of a disordered ``structure`` by ``method`` (see the module docstring).

    Falls back to the virtual crystal when no ordered approximant fits the supercell limit.

    Raises
    ------
    StructureReadError
        When ``method`` is unknown.
    """
    if method not in METHODS:
        raise StructureReadError(f"unknown disorder method '{method}' (choose {', '.join(METHODS)}).")
    if method == "approximant":
        try:
            return predict_approximant(predictor, structure)
        except StructureReadError as error:
            logger.info("No ordered approximant (%s); using the virtual crystal", error)
            result = predict_virtual_crystal(predictor, structure)
            result.note += f" No ordered approximant: {error}"
            return result
    return predict_virtual_crystal(predictor, structure)
