"""Formation energies from CHGNet energies, on the scale of the Materials Project hull.

Two ways to turn a CHGNet energy per atom into a formation energy against the PBE elemental
reference energies shipped in ``models/element_references.json``:

- :func:`chgnet_formation_energy` subtracts the references and adds the fitted corrections of
  ``models/chgnet_corrections.json`` (:func:`correction_features`: one offset per element, and a
  separate one for a Hubbard-U metal in an oxide or fluoride). CHGNet's MPtrj training labels
  already carry Materials Project's MP2020 anion and Hubbard-U corrections; the reference hull
  holds legacy (~2018) MP formation energies, whose corrections differ. The offsets, fitted by
  ridge least squares on CHGNet-relaxed training-split crystals
  (``app.engine.training.element_references.fit_chgnet_corrections``), map one scale onto the other.
- :func:`mp2020_formation_energy` first runs pymatgen's ``MaterialsProject2020Compatibility`` on
  the CHGNet energy (as a GGA / GGA+U calculation with MP's U values where an oxide or fluoride
  holds Co, Cr, Fe, Mn, Mo, Ni, V or W), the treatment a raw DFT energy needs.

``crystal-designer evaluate hull`` measures both against held-out Materials Project crystals.
"""

from __future__ import annotations

import json
import logging
import warnings
from functools import lru_cache
from pathlib import Path

from app.engine.core.paths import models_dir

logger = logging.getLogger(__name__)

REFERENCES_FILE = "element_references.json"
CORRECTIONS_FILE = "chgnet_corrections.json"
CORRECTIONS_NAME = "chgnet_corrections"
#: Metals Materials Project runs with a Hubbard U in oxides and fluorides (GGA+U); their energy
#: corrections there differ from those of their other compounds.
HUBBARD_U_METALS = frozenset({"Co", "Cr", "Fe", "Mn", "Mo", "Ni", "V", "W"})
#: Suffix of a Hubbard-U metal's feature in an oxide or fluoride (``"Fe+U"``).
HUBBARD_SUFFIX = "+U"

#: CHGNet's share of the ``mean`` route, ``w · chgnet + (1 − w) · predicted``: the lowest E_hull MAE
#: on 295 relaxed held-out MP crystals disjoint from those ``evaluate hull`` measures
#: (``crystal-designer evaluate hull --calibrate --n-held-out 300``).
CHGNET_HULL_WEIGHT = 0.75

#: Where the formation energy of a relaxed crystal placed on the hull comes from: ``{key: text}``
#: (unrelaxed crystals always use the predicted one). ``crystal-designer evaluate hull`` compares them.
HULL_ENERGY_SOURCES = {
    "chgnet": "CHGNet energy of the relaxed cell minus the elemental references, with the fitted corrections",
    "predicted": "formation energy predicted by the property model",
    "mean": f"weighted mean of the CHGNet and the predicted formation energies (CHGNet weight {CHGNET_HULL_WEIGHT:g})",
}
#: ``crystal-designer evaluate hull --n-held-out 300`` on 296 held-out MP crystals relaxed from
#: strained, rattled copies, MAE eV/atom / F1 of stable: mean (w = 0.75) 0.0472 / 0.834, plain mean
#: 0.0499 / 0.834, chgnet (corrected) 0.0476 / 0.829, predicted (CGCNN) 0.0623 / 0.809. On 295 other
#: held-out crystals (``--calibrate``) the MAE is flat from w = 0.6 to 0.85 (0.0482–0.0489) and
#: 0.0498 at 0.5; w = 0.75 is its minimum.
DEFAULT_HULL_ENERGY = "mean"


def hull_formation(predicted: float | None, chgnet: float | None, source: str = DEFAULT_HULL_ENERGY):
    """The formation energy (eV/atom) to place on the hull and the source used (a key of
    :data:`HULL_ENERGY_SOURCES`); the predicted one when CHGNet's is missing. (None, None) if neither."""
    if source not in HULL_ENERGY_SOURCES:
        raise ValueError(f"unknown hull energy source {source!r}")
    if source == "predicted" or chgnet is None:
        return (predicted, "predicted") if predicted is not None else (None, None)
    if source == "mean" and predicted is not None:
        return weighted_formation(predicted, chgnet), "mean"
    return chgnet, "chgnet"


def weighted_formation(predicted, chgnet, weight: float = CHGNET_HULL_WEIGHT):
    """The ``mean`` route, ``weight · chgnet + (1 − weight) · predicted`` (eV/atom; floats or arrays)."""
    return weight * chgnet + (1 - weight) * predicted


def element_reference_energies(folder: Path | None = None) -> dict[str, float]:
    """PBE energy per atom (eV/atom) of each element's reference phase."""
    return _references_in(folder or models_dir())


@lru_cache(maxsize=4)
def _references_in(folder: Path) -> dict[str, float]:
    path = folder / REFERENCES_FILE
    return {symbol: float(value) for symbol, value in json.loads(path.read_text())["energy_per_atom_eV"].items()}


@lru_cache(maxsize=1)
def _compatibility():
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    return MaterialsProject2020Compatibility(check_potcar=False)


def _parameters(composition) -> dict:
    """The GGA / GGA+U calculation parameters MP would have used for ``composition``."""
    u_settings = _compatibility().u_settings
    symbols = {element.symbol for element in composition.elements}
    # MP applies U on oxides first, then fluorides (its input-set rule: the most electronegative anion).
    anion = "O" if "O" in symbols else ("F" if "F" in symbols else None)
    hubbards = {symbol: u_settings[anion][symbol] for symbol in symbols
                if anion is not None and symbol in u_settings[anion]}
    return {"run_type": "GGA+U" if hubbards else "GGA", "hubbards": hubbards, "is_hubbard": bool(hubbards)}


def correction_features(composition) -> dict[str, float]:
    """Atom fraction per correction term of ``composition`` (a pymatgen Composition or Structure).

    One term per element (``"O"``), except that a Hubbard-U metal in an oxide or fluoride has its
    own term (``"Fe+U"``), as in Materials Project's GGA+U mixing scheme.
    """
    composition = getattr(composition, "composition", composition)
    amounts = composition.fractional_composition.get_el_amt_dict()
    with_u = "O" in amounts or "F" in amounts
    return {(symbol + HUBBARD_SUFFIX if with_u and symbol in HUBBARD_U_METALS else symbol): x
            for symbol, x in amounts.items() if x > 0}


def chgnet_corrections(folder: Path | None = None) -> dict[str, float]:
    """Fitted offsets (eV per atom of the term) of :func:`correction_features`' terms; empty
    when ``chgnet_corrections.json`` is not installed (CHGNet's energies are then used as they are)."""
    return _corrections_in(folder or models_dir())


@lru_cache(maxsize=4)
def _corrections_in(folder: Path) -> dict[str, float]:
    path = folder / CORRECTIONS_FILE
    if not path.is_file():
        logger.warning("%s is missing: CHGNet formation energies are not corrected", path.name)
        return {}
    return {term: float(value) for term, value in json.loads(path.read_text())["offsets_eV_per_atom"].items()}


def chgnet_formation_energy(structure, energy_per_atom: float, corrected: bool = True) -> tuple[float | None, str | None]:
    """Formation energy per atom (eV/atom) of ``structure`` at CHGNet's ``energy_per_atom``, on the
    reference hull's scale (with the fitted corrections unless ``corrected`` is False); ``(None,
    reason)`` when an element has no reference."""
    references = element_reference_energies()
    composition = structure.composition
    missing = sorted(e.symbol for e in composition.elements if e.symbol not in references)
    if missing:
        return None, f"no elemental reference energy for {', '.join(missing)}"
    elemental = sum(amount * references[element.symbol] for element, amount in composition.items())
    formation = energy_per_atom - elemental / composition.num_atoms
    if corrected:
        offsets = chgnet_corrections()
        formation += sum(x * offsets.get(term, 0.0) for term, x in correction_features(composition).items())
    return formation, None


def mp2020_formation_energy(structure, energy_per_atom: float) -> tuple[float | None, str | None]:
    """Formation energy per atom (eV/atom) of ``structure`` at CHGNet's ``energy_per_atom``, with
    the MP2020 corrections; ``(None, reason)`` when an element has no reference or no correction."""
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    references = element_reference_energies()
    composition = structure.composition
    missing = sorted(e.symbol for e in composition.elements if e.symbol not in references)
    if missing:
        return None, f"no elemental reference energy for {', '.join(missing)}"
    entry = ComputedStructureEntry(structure, energy_per_atom * composition.num_atoms,
                                   parameters=_parameters(composition))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corrected = _compatibility().process_entry(entry)
    if corrected is None:
        return None, "the MP2020 corrections do not cover this composition"
    elemental = sum(amount * references[element.symbol] for element, amount in composition.items())
    return (corrected.energy - elemental) / composition.num_atoms, None
