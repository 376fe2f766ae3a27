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
        self._hull = None
        self.hull_error: str | None = None
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
        """What this worker has loaded so far (models load on first use, so this grows).

        Returns
        -------
        dict
            ``device``, ``versions`` ({loaded model: "created sha256-prefix"}), ``shipped`` (sorted
            names of every manifest entry), ``predictor_error``, ``generator_error``, ``hull_error``
            and ``decile_edges`` (9 floats in eV/atom, or None).
        """
        versions = dict(self._predictor.versions) if self._predictor is not None else {}
        for other in self._other_predictors.values():
            versions.update(getattr(other, "versions", {}))
        edges = None
        loaded = set()
        if self._generator is not None:
            edges = [float(x) for x in self._generator.decile_edges]
            loaded |= {"density_vae", "segmentation_unet"}
            if getattr(self._generator, "_structure_index", None) is not None:
                loaded.add("structure_index")
            if getattr(self._generator, "_hull", None) is not None:
                loaded.add("reference_hull")
        if self._hull is not None:
            loaded.add("reference_hull")
        manifest = self._manifest()
        versions.update({name: self._version(manifest, name) for name in loaded})
        device = str(self._predictor.device) if self._predictor is not None else self._resolved_device()
        return {"device": device, "versions": versions, "shipped": sorted(manifest),
                "predictor_error": self.predictor_error, "generator_error": self.generator_error,
                "hull_error": self.hull_error, "decile_edges": edges}

    def _resolved_device(self) -> str:
        from app.engine.core.devices import select_device

        try:
            return str(select_device(self.device_preference))
        except CrystalDesignerError:
            return self.device_preference

    @staticmethod
    def _manifest() -> dict:
        from app.engine.core.registry import load_manifest

        try:
            return load_manifest()
        except (CrystalDesignerError, OSError, ValueError):
            return {}

    @staticmethod
    def _version(manifest: dict, name: str) -> str:
        entry = manifest.get(name, {})
        return f"{entry.get('created', '?')} {str(entry.get('sha256', ''))[:8]}"

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
    def hull(self):
        """The reference :class:`~app.engine.stability.hull.ReferenceHull` (loaded on first use; the
        generator's own when it has one), or None when it cannot be loaded (:attr:`hull_error` says why)."""
        if self._hull is None and self.hull_error is None:
            from app.engine.stability.hull import ReferenceHull

            try:
                self._hull = self._generator.hull if self._generator is not None else ReferenceHull.load()
            except CrystalDesignerError as error:
                self.hull_error = f"no reference hull: {error}"
                logger.warning("%s", self.hull_error)
        return self._hull

    @property
    def generator(self):
        """The :class:`~app.engine.generation.generator.CrystalGenerator`; ModelError if unavailable."""
        self.load()
        if self._generator is None:
            raise ModelError(self.generator_error or "generator models not available")
        return self._generator
