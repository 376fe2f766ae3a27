"""From a composition to crystal structures: substitution into prototypes of known crystals.

A prototype is a training crystal with the same anonymous formula as the composition (``AB2O4``
for ``MgAl2O4``). Elements are assigned to the prototype's sites by matching counts; among
elements with equal counts, by electronegativity order (the most electronegative element takes
the prototype's most electronegative site, so anions stay anions). The cell is then scaled
isotropically to the volume per atom the DING predictor gives for the composition.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from app.engine.compositions.formula import FormulaError, formula_string, parse_formula
from app.engine.core.errors import CrystalDesignerError
from app.engine.core.paths import models_dir

logger = logging.getLogger(__name__)

PROTOTYPES_NAME = "ding_prototypes"


@dataclass
class ProposedStructure:
    """One crystal proposed for a composition."""

    structure: object  # pymatgen Structure
    formula: str
    prototype_id: str
    prototype_formula: str
    prototype_space_group: str
    volume_per_atom: float

    @property
    def label(self) -> str:
        return f"{self.formula} in the {self.prototype_formula} prototype ({self.prototype_id}, {self.prototype_space_group})"


def _electronegativity(symbol: str) -> float:
    from pymatgen.core import Element

    value = Element(symbol).X
    return float(value) if value == value else 0.0  # NaN for noble gases


def _ordered(counts: dict[str, int]) -> list[str]:
    """Elements sorted by count, then electronegativity: the order a prototype's sites are matched in."""
    return sorted(counts, key=lambda element: (counts[element], _electronegativity(element), element))


class PrototypeLibrary:
    """Prototype crystals by anonymous formula (``models/ding_prototypes.json.gz``)."""

    def __init__(self, prototypes: list[dict]):
        self.by_anonymous: dict[str, list[dict]] = {}
        for prototype in prototypes:
            self.by_anonymous.setdefault(prototype["anonymous"], []).append(prototype)

    @classmethod
    def load(cls, folder: Path | None = None) -> "PrototypeLibrary":
        from app.engine.core.registry import verified_weights_path

        path, _ = verified_weights_path(PROTOTYPES_NAME, folder or models_dir())
        with gzip.open(path, "rt") as handle:
            return cls(json.load(handle))

    def propose(self, formula: str, volume_per_atom: float | None = None, limit: int = 5) -> list[ProposedStructure]:
        """Crystals of ``formula`` in up to ``limit`` prototypes (lowest prototype formation energy first).

        Parameters
        ----------
        formula : str
            Composition, e.g. ``"MgAl2O4"``.
        volume_per_atom : float, optional
            Target volume per atom (Å³/atom); default: keep the prototype's.

        Raises
        ------
        CrystalDesignerError
            When the formula is unusable or no prototype has its anonymous formula.
        """
        from pymatgen.core import Composition

        counts = parse_formula(formula)
        normalised = formula_string(counts)
        anonymous = Composition(counts).anonymized_formula
        prototypes = sorted(self.by_anonymous.get(anonymous, []), key=lambda p: p["formation_energy_per_atom"])
        if not prototypes:
            raise CrystalDesignerError(f"No known crystal has the anonymous formula {anonymous} of {normalised}; "
                                       "no prototype to place it in.")
        if volume_per_atom is not None and not volume_per_atom > 0:
            raise CrystalDesignerError(f"Volume per atom {volume_per_atom} Å³/atom is not positive.")
        return [self._substitute(p, counts, normalised, volume_per_atom) for p in prototypes[:limit]]

    @staticmethod
    def _substitute(prototype: dict, counts: dict[str, int], formula: str,
                    volume_per_atom: float | None) -> ProposedStructure:
        from pymatgen.core import Composition, Lattice, Structure

        prototype_counts = {str(e): int(round(n)) for e, n in
                            Composition(prototype["formula"]).get_reduced_composition_and_factor()[0].items()}
        mapping = dict(zip(_ordered(prototype_counts), _ordered(counts)))
        if len(mapping) != len(counts):
            raise FormulaError(f"{formula} does not match the {prototype['formula']} prototype.")
        structure = Structure(Lattice(prototype["lattice"]), [mapping[s] for s in prototype["species"]],
                              prototype["frac_coords"])
        if volume_per_atom is not None:
            structure.scale_lattice(volume_per_atom * len(structure))
        space_group = "{} ({})".format(*prototype["space_group"]) if prototype.get("space_group") else "?"
        return ProposedStructure(structure, formula, prototype["id"], prototype["formula"], space_group,
                                 structure.volume / len(structure))


def structures_for_composition(formula: str, composition_predictor, prototypes: PrototypeLibrary,
                               property_predictor=None, limit: int = 5, cancel=None) -> list[dict]:
    """Proposed crystals of ``formula`` with their predicted properties.

    The cell is scaled to the DING-predicted volume per atom; with ``property_predictor``
    (a :class:`~app.engine.properties.predictor.PropertyPredictor`), each crystal also gets the
    eight CGCNN properties. Returns one dict per crystal: ``structure``, ``formula``, ``source``
    (prototype label), ``prototype_id``, ``space_group``, ``volume_per_atom`` (Å³/atom),
    ``ding`` (the three composition properties), ``properties`` (eight or None), ``error``.
    """
    ding = composition_predictor.predict([formula])[0]
    if ding.get("error"):
        raise FormulaError(ding["error"])
    proposals = prototypes.propose(formula, ding["volume_per_atom"], limit=limit)
    predictions = property_predictor.predict([p.structure for p in proposals], cancel=cancel) \
        if property_predictor is not None and proposals else [None] * len(proposals)
    records = []
    for proposal, prediction in zip(proposals, predictions):
        error = str(prediction) if isinstance(prediction, Exception) else None
        values = None if prediction is None or error else dict(prediction.values)
        records.append({"structure": proposal.structure, "formula": proposal.formula, "source": proposal.label,
                        "prototype_id": proposal.prototype_id, "space_group": proposal.prototype_space_group,
                        "volume_per_atom": proposal.volume_per_atom,
                        "ding": {k: ding[k] for k in ("formation_enthalpy", "energy_per_atom", "volume_per_atom")},
                        "properties": values, "error": error})
    return records
