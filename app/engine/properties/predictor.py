"""Eight-property prediction for crystal structures with the shipped CGCNN models."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from app.engine.core.cancel import CancelToken, ProgressCallback
from app.engine.core.errors import ModelError, StructureReadError
from app.engine.properties.graph import CrystalGraph, build_graph, collate, require_predictable
from app.engine.core.paths import models_dir
from app.engine.core.property_table import METALLIC_GAP_THRESHOLD_EV, PROPERTY_KEYS

logger = logging.getLogger(__name__)

#: Shipped models the predictor combines, by manifest name.
PROPERTY_MODELS = ("formation_energy", "band_gap", "elastic", "optical")
ELEMENT_REFERENCES_FILE = "element_references.json"


def graph_for_prediction(structure) -> CrystalGraph:
    """Neighbour graph of ``structure``, or a :class:`StructureReadError` saying why it can't be used."""
    require_predictable(structure)
    return build_graph(structure)


PRECISIONS = ("auto", "float32", "bfloat16")


def resolve_precision(precision: str, device) -> str:
    """``float32`` or ``bfloat16`` for ``precision`` on ``device`` (see :class:`PropertyPredictor`)."""
    import torch

    if precision not in PRECISIONS:
        raise ModelError(f"Unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        native = torch.device(device).type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return "bfloat16" if native else "float32"
    if precision == "bfloat16" and torch.device(device).type != "cpu":
        raise ModelError("bfloat16 prediction is implemented for the CPU only.")
    return precision


@dataclass
class Prediction:
    """Eight properties of one structure (None where undefined), in the units of ``PROPERTIES``."""

    values: dict[str, float | None]

    def __getitem__(self, key: str) -> float | None:
        return self.values[key]


class PropertyPredictor:
    """Loads the four property models once and predicts batches of structures.

    Parameters
    ----------
    device : str
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda`` or ``mps``.
    folder : Path, optional
        Models folder (default: the shipped ``models/``).
    models : dict, optional
        Already constructed ``{name: CGCNN}`` (tests with random weights); skips loading.
    element_references : dict, optional
        ``{symbol: eV/atom}``; default read from the models folder.
    precision : str
        ``float32``, ``bfloat16`` (CPU autocast), or ``auto``: bfloat16 on CPUs with native
        bfloat16 instructions, float32 elsewhere. bfloat16 (the graph convolutions; pooling, heads
        and de-standardisation stay float32, so outputs are not rounded to 8 significant bits) is
        about 2x faster on such CPUs and changes the validation MAEs by less than 1 %
        (``benchmarks/precision_check.py``).
    """

    #: Which predictor this is (records say it); the PointNet predictor says "pointnet".
    model_name = "cgcnn"
    #: Structure -> model input (a module-level function, so file-reading workers can run it).
    featurise = staticmethod(graph_for_prediction)

    def __init__(self, device: str = "auto", folder: Path | None = None, models: dict | None = None,
                 element_references: dict[str, float] | None = None, precision: str = "auto"):
        import torch

        from app.engine.core.devices import select_device

        self.device = select_device(device)
        self.folder = folder or models_dir()
        self.versions: dict[str, str] = {}
        if models is None:  # the shipped (or ``folder``'s) models; see :meth:`from_models`
            models, self.versions = self._load_models(self.folder)
        missing = [name for name in PROPERTY_MODELS if name not in models]
        if missing:
            raise ModelError(f"Property models missing: {', '.join(missing)}.")
        self.models = {name: model.to(self.device).eval() for name, model in models.items()}
        if element_references is None:
            element_references = self._read_references(self.folder / ELEMENT_REFERENCES_FILE)
        self.element_references = element_references
        self._torch = torch
        self.precision = resolve_precision(precision, self.device)

    @classmethod
    def from_models(cls, folder: Path | None = None, device: str = "auto", **options) -> "PropertyPredictor":
        """The predictor of the models in ``folder`` (default: the shipped ``models/``), verified
        against the manifest; ``options`` as for the constructor (``precision`` …)."""
        return cls(device=device, folder=folder, **options)

    @staticmethod
    def _load_models(folder: Path) -> tuple[dict, dict[str, str]]:
        """``({name: CGCNN}, {name: "created sha256[:8]"})`` of the property models in ``folder``."""
        import app.engine.properties.cgcnn  # noqa: F401  (registers the "cgcnn" kind)
        from app.engine.core.registry import load_model

        models, versions = {}, {}
        for name in PROPERTY_MODELS:
            models[name], entry = load_model(name, folder)
            versions[name] = f"{entry.get('created', '?')} {entry['sha256'][:8]}"
        return models, versions

    @staticmethod
    def _read_references(path: Path) -> dict[str, float]:
        try:
            return json.loads(path.read_text())["energy_per_atom_eV"]
        except (OSError, ValueError, KeyError) as error:
            raise ModelError(f"Elemental reference energies cannot be read from {path}: {error}") from error

    def predict_graphs(self, graphs: Sequence[CrystalGraph], batch_size: int = 128) -> dict[str, np.ndarray]:
        """Raw model outputs for ``graphs``: ``{model: array (n, n_targets)}`` in training units."""
        from app.engine.properties.cgcnn import batch_to_tensors

        outputs: dict[str, list[np.ndarray]] = {name: [] for name in self.models}
        torch = self._torch
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16")
        with torch.inference_mode(), autocast:
            for start in range(0, len(graphs), batch_size):
                batch = batch_to_tensors(collate(graphs[start : start + batch_size]), self.device)
                for name, model in self.models.items():
                    outputs[name].append(model.predict(batch).float().cpu().numpy())
        return {
            name: np.concatenate(parts) if parts else np.zeros((0, len(self.models[name].config.targets)))
            for name, parts in outputs.items()
        }

    def energy_per_atom(self, structure, formation_energy: float) -> float | None:
        """Formation energy plus Σ x_i μ_i over element fractions (None if a reference is missing)."""
        total = formation_energy
        for element, fraction in structure.composition.fractional_composition.items():
            mu = self.element_references.get(element.symbol)
            if mu is None:
                return None
            total += fraction * mu
        return total

    def predict(
        self,
        structures: Sequence,
        batch_size: int = 128,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> list[Prediction | StructureReadError]:
        """Predict the eight properties of each structure.

        Returns one entry per input, in order: a :class:`Prediction`, or the
        :class:`StructureReadError` explaining why that structure cannot be predicted.
        """
        results: list[Prediction | StructureReadError | None] = [None] * len(structures)
        total = len(structures)
        for start in range(0, total, batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            chunk = range(start, min(start + batch_size, total))
            graphs, positions = [], []
            for i in chunk:
                try:
                    graphs.append(self.featurise(structures[i]))
                    positions.append(i)
                except StructureReadError as error:
                    results[i] = error
            if graphs:
                raw = self.predict_graphs(graphs, batch_size)
                for row, i in enumerate(positions):
                    results[i] = self.assemble(structures[i], {name: out[row] for name, out in raw.items()})
            if progress is not None:
                progress(chunk.stop, total, "predicting properties")
        return results  # type: ignore[return-value]

    def assemble(self, structure, raw: dict[str, np.ndarray]) -> Prediction:
        formation = float(raw["formation_energy"][0])
        gap = max(float(raw["band_gap"][0]), 0.0)
        metallic = gap < METALLIC_GAP_THRESHOLD_EV
        log_k, log_g, poisson = (float(x) for x in raw["elastic"][:3])
        n = float(raw["optical"][0])
        values: dict[str, float | None] = {
            "formation_energy_per_atom": formation,
            "energy_per_atom": self.energy_per_atom(structure, formation),
            "band_gap": 0.0 if metallic else gap,
            "bulk_modulus": 10.0**log_k,
            "shear_modulus": 10.0**log_g,
            "poisson_ratio": poisson,
            # The seed paper's rule: optical constants of metals are not defined.
            "refractive_index": None if metallic else max(n, 1.0),
            "dielectric_constant": None if metallic else max(n, 1.0) ** 2,
        }
        return Prediction({key: values[key] for key in PROPERTY_KEYS})
