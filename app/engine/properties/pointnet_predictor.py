"""Eight-property prediction with the PointNet model instead of the CGCNN models.

:class:`PointNetPredictor` has the interface of :class:`PropertyPredictor` (``predict``,
``predict_graphs``, ``assemble``, ``versions``, ``device``), so the file pipeline, the worker and
the generator can use either. Its ``featurise`` step builds point clouds instead of neighbour
graphs, and its single multi-task network's outputs are handed to ``PropertyPredictor.assemble``
in the per-model layout of the CGCNN models, so total energy, the metallic rule and ε∞ = n² are
derived exactly as for CGCNN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from app.engine.core.errors import ModelError
from app.engine.properties.point_cloud import PointCloud, collate_clouds, point_cloud
from app.engine.properties.predictor import PropertyPredictor

#: Manifest name of the shipped PointNet.
POINTNET_MODEL = "pointnet"
#: Which outputs of the multi-task network stand for which CGCNN model, in that model's order.
OUTPUT_LAYOUT = {
    "formation_energy": ["formation_energy_per_atom"],
    "band_gap": ["band_gap"],
    "elastic": ["log10_bulk_modulus", "log10_shear_modulus", "poisson_ratio"],
    "optical": ["refractive_index"],
}
#: Predictor names accepted by ``predictor_for`` (the command line's ``--model``, the settings).
PREDICTOR_NAMES = ("cgcnn", "pointnet")


class PointNetPredictor(PropertyPredictor):
    """The eight properties from the PointNet point-cloud model.

    Parameters
    ----------
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    folder : Path, optional
        Models folder (default: the shipped ``models/``).
    model : PointNet, optional
        An already built network (tests with random weights); skips loading.
    element_references : dict, optional
        ``{symbol: eV/atom}``; default read from the models folder.
    """

    model_name = "pointnet"
    featurise = staticmethod(point_cloud)

    def __init__(self, device: str = "auto", folder: Path | None = None, model=None,
                 element_references: dict[str, float] | None = None, **_options):
        import torch

        from app.engine.core.devices import select_device
        from app.engine.core.paths import models_dir

        self.device = select_device(device)
        self.folder = folder or models_dir()
        self.versions: dict[str, str] = {}
        if model is None:
            import app.engine.properties.pointnet  # noqa: F401  (registers the "pointnet" kind)
            from app.engine.core.registry import load_model

            model, entry = load_model(POINTNET_MODEL, self.folder)
            self.versions[POINTNET_MODEL] = f"{entry.get('created', '?')} {entry['sha256'][:8]}"
        targets = list(model.config.targets)
        missing = [t for names in OUTPUT_LAYOUT.values() for t in names if t not in targets]
        if missing:
            raise ModelError(f"The PointNet model does not predict {', '.join(missing)}.")
        self._columns = {name: [targets.index(t) for t in names] for name, names in OUTPUT_LAYOUT.items()}
        self.model = model.to(self.device).eval()
        self.models = {POINTNET_MODEL: self.model}
        if element_references is None:
            from app.engine.properties.predictor import ELEMENT_REFERENCES_FILE

            element_references = self._read_references(self.folder / ELEMENT_REFERENCES_FILE)
        self.element_references = element_references
        self.precision = "float32"
        self._torch = torch

    def predict_graphs(self, graphs: Sequence[PointCloud], batch_size: int = 256) -> dict[str, np.ndarray]:
        """Raw outputs for point clouds, in the CGCNN models' layout ``{model: array (n, n_targets)}``."""
        from app.engine.properties.pointnet import batch_to_tensors

        # Batches of similar sizes: a batch is padded to its largest cloud.
        order = np.argsort([cloud.n_atoms for cloud in graphs], kind="stable")
        out = np.zeros((len(graphs), len(self.model.config.targets)), np.float32)
        with self._torch.inference_mode():
            for start in range(0, len(graphs), batch_size):
                rows = order[start : start + batch_size]
                batch = batch_to_tensors(collate_clouds([graphs[i] for i in rows]), self.device)
                out[rows] = self.model.predict(batch).float().cpu().numpy()
        return {name: out[:, columns] for name, columns in self._columns.items()}


def predictor_for(name: str, device: str = "auto", folder: Path | None = None, **options) -> PropertyPredictor:
    """The predictor called ``name`` (``cgcnn`` or ``pointnet``).

    Raises
    ------
    ModelError
        Unknown name, or the models cannot be loaded.
    """
    if name == "pointnet":
        return PointNetPredictor(device=device, folder=folder, **options)
    if name == "cgcnn":
        return PropertyPredictor(device=device, folder=folder, **options)
    raise ModelError(f"Unknown predictor '{name}'; choose one of {', '.join(PREDICTOR_NAMES)}.")
