"""The models the worker process holds: the property predictor and the generator.

Both load once per worker process and stay in memory. A missing or broken generator never
stops prediction: its error is kept and reported ("generator models not available: …").
"""

from __future__ import annotations

import logging
import os

from app.engine.core.errors import CrystalDesignerError, ModelError

logger = logging.getLogger(__name__)

class WorkerModels:
    """Lazily loaded models of one worker process.

    Parameters
    ----------
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    """

    def __init__(self, device: str = "auto") -> None:
        self.device_preference = device
        self._predictor = None
        self._other_predictors: dict[str, object] = {}
        self._generator = None
        self.predictor_error: str | None = None
        self.generator_error: str | None = None
        self._loaded = False

    def load(self) -> dict:
        """Load the predictor and the generator (once); describe what is available.

        Returns
        -------
        dict
            ``device`` (str), ``versions`` ({model: version}), ``predictor_error`` and
            ``generator_error`` (str or None), ``decile_edges`` (9 floats in eV/atom, or None).
        """
        if not self._loaded:
            self._loaded = True
            self._load_predictor()
            if self._predictor is not None:
                self._load_generator()
            else:
                self.generator_error = f"generator models not available: {self.predictor_error}"
        return self.describe()

    def _load_predictor(self) -> None:
        from app.engine.properties.predictor import PropertyPredictor

        try:
            self._predictor = PropertyPredictor.from_models(device=self.device_preference)
        except CrystalDesignerError as error:
            self.predictor_error = f"property models not available: {error}"
            logger.warning("%s", self.predictor_error)

    def _load_generator(self) -> None:
        from app.engine.generation.generator import CrystalGenerator

        try:
            # Leave one core to the window: segmentation runs in (CPU count - 1) processes.
            self._generator = CrystalGenerator.from_models(device=self.device_preference, predictor=self._predictor,
                                                           segmentation_workers=max(1, (os.cpu_count() or 1) - 1))
        except (CrystalDesignerError, OSError) as error:  # load_model reports mismatched weights as ModelError
            self.generator_error = f"generator models not available: {error}"
            logger.warning("%s", self.generator_error)

    def describe(self) -> dict:
        versions = dict(self._predictor.versions) if self._predictor is not None else {}
        edges = None
        if self._generator is not None:
            edges = [float(x) for x in self._generator.decile_edges]
            versions.update(self._generator_versions())
        device = str(self._predictor.device) if self._predictor is not None else self._resolved_device()
        return {"device": device, "versions": versions, "predictor_error": self.predictor_error,
                "generator_error": self.generator_error, "decile_edges": edges}

    def _resolved_device(self) -> str:
        from app.engine.core.devices import select_device

        try:
            return str(select_device(self.device_preference))
        except CrystalDesignerError:
            return self.device_preference

    @staticmethod
    def _generator_versions() -> dict[str, str]:
        from app.engine.core.registry import load_manifest

        try:
            manifest = load_manifest()
        except (CrystalDesignerError, OSError, ValueError):
            return {}
        return {name: f"{manifest[name].get('created', '?')} {str(manifest[name].get('sha256', ''))[:8]}"
                for name in ("density_vae", "segmentation_unet") if name in manifest}

    @property
    def predictor(self):
        """The :class:`~app.engine.properties.predictor.PropertyPredictor`; ModelError if unavailable."""
        self.load()
        if self._predictor is None:
            raise ModelError(self.predictor_error or "property models not available")
        return self._predictor

    def predictor_named(self, name: str):
        """The property predictor ``name`` (``cgcnn``: :attr:`predictor`; ``pointnet`` loads on first
        use and stays loaded); ModelError if it cannot be loaded."""
        if name == "cgcnn":
            return self.predictor
        if name not in self._other_predictors:
            from app.engine.properties.pointnet_predictor import predictor_for

            self._other_predictors[name] = predictor_for(name, device=self.device_preference)
        return self._other_predictors[name]

    @property
    def generator(self):
        """The :class:`~app.engine.generation.generator.CrystalGenerator`; ModelError if unavailable."""
        self.load()
        if self._generator is None:
            raise ModelError(self.generator_error or "generator models not available")
        return self._generator
