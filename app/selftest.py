"""``crystal-designer --self-test``: checks that an installed copy works end to end.

Checks, in order (each prints one line: name, ok/FAILED, seconds, detail):

``install``   where the models and resources are, and that the example structure is there
``models``    every model of the manifest loads and matches its sha256 (the six shipped ones
              must all be present)
``predict``   the bundled SrTiO3 example gets eight properties, all finite where defined
``generate``  a few candidates around SrTiO3 run through the whole ICSG3D pipeline and funnel
              (passes when the pipeline runs, however few candidates survive the filters), and
              the true maps of SrTiO3 segment back to SrTiO3
``worker``    the same prediction through the GUI's spawn worker process (in a frozen app this
              re-runs the executable, so it also checks ``multiprocessing.freeze_support``)
``render``    one frame of the 3-D view drawn off screen with the viewer's own meshes, saved
              as a PNG in a temporary folder and checked to be non-blank

The exit status is 0 only if every check passed. Nothing is written to the install folder
(a frozen app may be read-only): the PNG goes to a temporary folder that is removed afterwards.
No network access is needed.
"""

from __future__ import annotations

import math
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TextIO

#: Checks in the order they run; ``run_self_test(checks=...)`` may pick a subset.
CHECKS = ("install", "models", "predict", "generate", "worker", "render")
#: Models a complete install ships (property models + generator).
REQUIRED_MODELS = ("formation_energy", "band_gap", "elastic", "optical", "density_vae", "segmentation_unet")
EXAMPLE_NAME = "SrTiO3.cif"
#: Properties that every crystal has (refractive index and ε∞ are undefined for metals).
ALWAYS_DEFINED = ("formation_energy_per_atom", "band_gap", "bulk_modulus", "shear_modulus", "poisson_ratio")
GENERATE_COUNT = 8
#: Longest wait for the worker process to start, load its models and predict (s).
WORKER_TIMEOUT_S = 300.0
RENDER_SIZE = (480, 360)


class CheckFailed(Exception):
    """A check ran but its result is wrong (the message is the report's detail)."""


@dataclass
class CheckResult:
    name: str
    ok: bool
    seconds: float
    detail: str


class _SelfTest:
    """State shared between checks (the example structure, the loaded predictor)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.example_path: Path | None = None
        self.structure = None
        self.predictor = None

    # -- checks ------------------------------------------------------------------------------

    def install(self) -> str:
        from app import __version__
        from app.engine.core.paths import examples_dir, install_root, models_dir

        example = examples_dir() / EXAMPLE_NAME
        if not example.is_file():
            raise CheckFailed(f"example structure missing: {example}")
        self.example_path = example
        frozen = "frozen" if getattr(sys, "frozen", False) else "source"
        return (f"crystal-designer {__version__} ({frozen}, Python {platform.python_version()}, "
                f"{platform.system()} {platform.machine()}); install {install_root()}; models {models_dir()}")

    def models(self) -> str:
        from app.engine.core.paths import models_dir
        from app.engine.core.registry import load_manifest, load_state_dict, verified_weights_path

        folder = models_dir()
        manifest = load_manifest(folder)
        if not manifest:
            raise CheckFailed(f"no model manifest in {folder}")
        problems, sizes = [], 0
        for name, entry in sorted(manifest.items()):
            try:
                if not entry["file"].endswith(".pt"):  # indexes and tables: their sha256 only
                    sizes += verified_weights_path(name, folder)[0].stat().st_size
                    continue
                state, _ = load_state_dict(name, folder)  # checks the sha256 first
                if not state:
                    problems.append(f"{name}: empty state dict")
                sizes += (folder / entry["file"]).stat().st_size
            except Exception as error:  # noqa: BLE001 - every failure is reported
                problems.append(f"{name}: {error}")
        missing = [name for name in REQUIRED_MODELS if name not in manifest]
        if missing:
            problems.append(f"not in the manifest: {', '.join(missing)}")
        if problems:
            raise CheckFailed("; ".join(problems))
        return f"{len(manifest)} models, sha256 verified, {sizes / 1e6:.1f} MB ({', '.join(sorted(manifest))})"

    def _example_structure(self):
        if self.structure is None:
            from app.engine.io.crystal_io import read_crystal_file

            if self.example_path is None:
                self.install()
            loaded = [c for c in read_crystal_file(str(self.example_path)) if c.ok]
            if not loaded:
                raise CheckFailed(f"{self.example_path} cannot be read")
            self.structure = loaded[0].structure
        return self.structure

    def predict(self) -> str:
        from app.engine.properties.predictor import PropertyPredictor

        structure = self._example_structure()
        predictor = PropertyPredictor.from_models(device=self.device)
        (outcome,) = predictor.predict([structure])
        if isinstance(outcome, Exception):
            raise CheckFailed(f"prediction refused: {outcome}")
        _check_values(outcome.values)
        self.predictor = predictor
        values = outcome.values
        return (f"{structure.composition.reduced_formula} on {predictor.device}: "
                f"Ef {values['formation_energy_per_atom']:.3f} eV/atom, gap {values['band_gap']:.2f} eV, "
                f"K {values['bulk_modulus']:.0f} GPa, G {values['shear_modulus']:.0f} GPa")

    def generate(self) -> str:
        from app.engine.generation.generator import CrystalGenerator
        from app.engine.generation.settings import FUNNEL_STAGE_KEYS, GenerationSettings

        structure = self._example_structure()
        generator = CrystalGenerator.from_models(device=self.device, predictor=self.predictor)
        settings = GenerationSettings(mode="around", count=GENERATE_COUNT, sigma=0.5, seed=0,
                                      batch_size=GENERATE_COUNT, require_novel=False)
        result = generator.generate(settings, base=structure)
        if result.funnel["generated"] != GENERATE_COUNT or len(result.candidates) != GENERATE_COUNT:
            raise CheckFailed(f"{len(result.candidates)} of {GENERATE_COUNT} candidates came back")
        for candidate in result.kept:
            _check_values(candidate.properties)
        funnel = " > ".join(f"{key} {result.funnel[key]}" for key in FUNNEL_STAGE_KEYS)
        return f"funnel: {funnel}; {self._segmentation_round_trip(structure)}; {self._non_cubic_base(generator, settings)}"

    @staticmethod
    def _non_cubic_base(generator, settings) -> str:
        """A tetragonal base (rutile TiO2): its true periodic maps decode back to it, and the
        periodic generator (when installed) generates around it."""
        from pymatgen.core import Lattice, Structure

        from app.engine.generation.periodic_density import encode, structure_from_maps, structure_matches

        rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                           [[0, 0, 0], [0.3053, 0.3053, 0]])
        maps = encode(rutile)
        decoded = structure_from_maps(maps.density, maps.species, maps.lattice)
        if decoded is None or not structure_matches(decoded, rutile):
            raise CheckFailed("the periodic maps of rutile TiO2 do not decode back to it")
        if generator.periodic is None:
            return "rutile periodic round trip ok (periodic generator not installed)"
        result = generator.generate(settings, base=rutile)
        if len(result.candidates) != GENERATE_COUNT:
            raise CheckFailed(f"around rutile: {len(result.candidates)} of {GENERATE_COUNT} candidates came back")
        return f"rutile periodic round trip ok, {result.funnel['decoded']} of {GENERATE_COUNT} decoded around it"

    @staticmethod
    def _segmentation_round_trip(structure) -> str:
        """The true density and species maps of the base segment back to the same crystal.

        Untrained or early weights may decode no candidate at all; this still runs the
        segmentation (scipy, scikit-image) that turns decoded maps into crystals.
        """
        from app.engine.generation.density import encode
        from app.engine.generation.segmentation import decode

        encoded = encode(structure)
        decoded = decode(encoded.density, encoded.species, encoded.lattice_abc)
        expected = encoded.structure.composition.reduced_formula
        found = decoded.composition.reduced_formula
        if found != expected or len(decoded) != len(encoded.structure):
            raise CheckFailed(f"segmentation of the true {expected} maps gave {found} ({len(decoded)} sites, "
                              f"expected {len(encoded.structure)})")
        return f"segmentation round trip {found} ({len(decoded)} sites) ok"

    def worker(self) -> str:
        import asyncio

        return asyncio.run(asyncio.wait_for(self._worker_predict(), WORKER_TIMEOUT_S))

    async def _worker_predict(self) -> str:
        from app.worker.client import WorkerClient

        if self.example_path is None:
            self.install()
        client = WorkerClient(device=self.device)
        started = time.perf_counter()
        client.start()
        try:
            info = await client.wait_models()
            ready = time.perf_counter() - started
            if info.get("predictor_error"):
                raise CheckFailed(f"worker {client.pid}: {info['predictor_error']}")
            results = await client.predict([self.example_path])
            if len(results) != 1 or results[0]["error"]:
                raise CheckFailed(f"worker {client.pid}: {results[0]['error'] if results else 'no result'}")
            _check_values(results[0]["properties"])
            generator = "generator loaded" if not info.get("generator_error") else info["generator_error"]
            return f"spawned worker pid {client.pid}, models ready in {ready:.1f} s, predicted; {generator}"
        finally:
            await client.shutdown()

    def render(self) -> str:
        import os

        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            # No display: go straight to EGL instead of VTK warning about a bad X connection first.
            os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
        import numpy as np
        import pyvista as pv
        from PIL import Image

        from app.ui import scene

        structure = self._example_structure()
        plotter = pv.Plotter(off_screen=True, window_size=list(RENDER_SIZE))
        try:
            plotter.set_background("white")
            atoms = scene.draw_structure(plotter, structure)  # the viewer's own drawing
            plotter.view_isometric()
            plotter.camera.azimuth = 20  # off the body diagonal, so atoms do not hide each other
            plotter.camera.elevation = 10
            plotter.render()
            renderer = _renderer_name(plotter)
            with tempfile.TemporaryDirectory(prefix="crystal-designer-selftest-") as folder:
                path = Path(folder) / "frame.png"
                plotter.screenshot(str(path))
                if not path.is_file():
                    raise CheckFailed("no PNG was written")
                size = path.stat().st_size
                pixels = np.asarray(Image.open(path).convert("RGB"))
        finally:
            plotter.close()
        if pixels.shape[:2] != (RENDER_SIZE[1], RENDER_SIZE[0]):
            raise CheckFailed(f"frame is {pixels.shape[1]}x{pixels.shape[0]}, expected {RENDER_SIZE[0]}x{RENDER_SIZE[1]}")
        background = np.array([255, 255, 255])
        drawn = float(np.any(pixels != background, axis=2).mean())
        colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
        if drawn < 0.01 or colours < 16:
            raise CheckFailed(f"frame looks blank ({drawn:.1%} drawn pixels, {colours} colours)")
        return (f"{len(atoms.symbols)} atoms, {pixels.shape[1]}x{pixels.shape[0]} PNG {size / 1024:.0f} KiB, "
                f"{drawn:.0%} drawn, {colours} colours{renderer}")


def _renderer_name(plotter) -> str:
    try:
        return f", {type(plotter.ren_win).__name__}"
    except Exception:  # noqa: BLE001 - informational only
        return ""


def _check_values(values: dict | None) -> None:
    if not values:
        raise CheckFailed("no properties returned")
    bad = [k for k, v in values.items() if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v))]
    undefined = [k for k in ALWAYS_DEFINED if values.get(k) is None]
    if bad or undefined:
        raise CheckFailed(f"non-finite: {', '.join(bad) or '-'}; undefined: {', '.join(undefined) or '-'}")


def _run_one(name: str, check: Callable[[], str]) -> CheckResult:
    started = time.perf_counter()
    try:
        detail, ok = check(), True
    except CheckFailed as error:
        detail, ok = str(error), False
    except Exception as error:  # noqa: BLE001 - the report names any failure
        frame = traceback.extract_tb(error.__traceback__)[-1]
        detail, ok = f"{type(error).__name__}: {error} ({Path(frame.filename).name}:{frame.lineno})", False
    return CheckResult(name, ok, time.perf_counter() - started, " ".join(detail.split()))


def run_self_test(checks: Sequence[str] | None = None, device: str = "auto",
                  stream: TextIO | None = None) -> int:
    """Run the checks, print one line per check and a summary; 0 if all passed, else 1.

    Parameters
    ----------
    checks : sequence of str, optional
        Subset of :data:`CHECKS` (default: all), run in the order of :data:`CHECKS`.
    device : str
        Torch device for the models: ``auto``, ``cpu``, ``cuda`` or ``mps``.
    stream : text stream, optional
        Where the report goes (default: stdout).
    """
    stream = stream or sys.stdout
    selected = [name for name in CHECKS if checks is None or name in checks]
    unknown = sorted(set(checks or ()) - set(CHECKS))
    if unknown:
        raise ValueError(f"Unknown self-test checks: {', '.join(unknown)}")
    state = _SelfTest(device)
    results: list[CheckResult] = []
    started = time.perf_counter()
    print(f"crystal-designer self-test ({len(selected)} checks)", file=stream, flush=True)
    for name in selected:
        result = _run_one(name, getattr(state, name))
        results.append(result)
        print(f"  {result.name:<9} {'ok' if result.ok else 'FAILED':<6} {result.seconds:6.2f} s  {result.detail}",
              file=stream, flush=True)
    failed = [r.name for r in results if not r.ok]
    total = time.perf_counter() - started
    if failed:
        print(f"self-test FAILED ({', '.join(failed)}) in {total:.1f} s", file=stream, flush=True)
        return 1
    print(f"self-test passed ({len(results)} checks) in {total:.1f} s", file=stream, flush=True)
    return 0
