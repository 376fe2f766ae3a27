"""Relaxing crystals (cell and positions) with the CHGNet machine-learned potential, offline.

CHGNet 0.4.2's pretrained weights ship inside its wheel; :func:`load_chgnet` loads them once per
process (nothing is downloaded). All structures of a call relax in lockstep: one batched CHGNet
evaluation per optimiser step serves every unconverged structure, each with its own ASE optimiser
(BFGS by default, FIRE on request) on a ``FrechetCellFilter`` (cell and positions together).
Forces and stresses come from one first-order backward pass (:func:`energies_forces_stresses`). A relaxation that diverges
(energy blows up, atoms collide, the cell collapses or explodes, the step cap is reached far from
converged) is reported in ``RelaxationResult.error``, never raised.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import threading
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from app.engine.core.cancel import CancelToken, ProgressCallback
from app.engine.core.errors import ModelError
from app.engine.core.symmetry import space_group_label

logger = logging.getLogger(__name__)

DEFAULT_FMAX = 0.1  # eV/Å
DEFAULT_MAX_STEPS = 300
#: ASE optimisers that evaluate once per step (so many structures can step in lockstep).
STEPPING_OPTIMIZERS = ("FIRE", "BFGS", "LBFGS")
#: BFGS took half the steps of FIRE on 50 strained, rattled MP crystals (534 vs 1039), same energies.
DEFAULT_OPTIMIZER = "BFGS"
#: Structures evaluated together per CHGNet call.
BATCH_SIZE = 64
#: Divergence limits: energy per atom (eV/atom), closest pair (Å), volume ratio to the start.
MAX_ENERGY_PER_ATOM = 5.0
MIN_PAIR_DISTANCE = 0.6
VOLUME_RATIO_RANGE = (0.25, 4.0)
#: At the step cap, a largest force within this multiple of fmax still counts as relaxed.
NEAR_CONVERGED_FACTOR = 3.0
EV_PER_A3_TO_GPA = 160.21766208
GPA_TO_EV_PER_A3 = 1 / EV_PER_A3_TO_GPA

#: Pairs closer than this fraction of the sum of covalent radii are unphysical. Chosen on all 40,953
#: indexed training crystals (``evaluate_hull.covalent_ratio_survey``): the smallest ratio is 0.607
#: (mp-581991), so none fails at 0.6; 0.65 would reject 3 of them, 0.7 0.27 %.
COVALENT_FRACTION = 0.6

_model_lock = threading.Lock()
_models: dict[str, object] = {}


@dataclass
class RelaxationResult:
    """Outcome of relaxing one structure.

    ``structure`` is the relaxed crystal (None when it failed); ``energy_per_atom`` is CHGNet's
    energy (eV/atom, MPtrj GGA/GGA+U scale); ``max_force`` the largest residual force (eV/Å,
    cell included); ``volume_change_percent`` relative to the input; ``rms_displacement`` (Å) of
    the atoms in fractional-coordinate terms scaled by the relaxed cell; space groups are refined
    labels (``"Pm-3m (221)"``); ``matches_unrelaxed`` whether StructureMatcher still pairs the
    relaxed and input crystals; ``error`` the reason the relaxation failed (None when relaxed).
    """

    structure: object | None
    energy_per_atom: float | None
    steps: int
    max_force: float | None
    volume_change_percent: float | None
    rms_displacement: float | None
    space_group_before: str
    space_group_after: str | None
    matches_unrelaxed: bool | None
    error: str | None = None
    converged: bool = False


def load_chgnet(device: str = "cpu"):
    """The pretrained CHGNet model on ``device`` (loaded once per process and device)."""
    from app.engine.core.devices import select_device

    torch_device = str(select_device(device))
    with _model_lock:
        if torch_device not in _models:
            try:
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from chgnet.model import CHGNet

                    _models[torch_device] = CHGNet.load(use_device=torch_device, verbose=False)
            except Exception as error:  # a broken install must read as a message, not a traceback
                raise ModelError(f"The CHGNet potential could not be loaded ({error}).") from error
            _models[torch_device].eval()
            for parameter in _models[torch_device].parameters():  # inference only: no weight gradients
                parameter.requires_grad_(False)
        return _models[torch_device]


def chgnet_energies(structures: Sequence, device: str = "cpu", batch_size: int = BATCH_SIZE) -> list[float]:
    """CHGNet energies per atom (eV/atom) of ``structures`` as given (no relaxation)."""
    model = load_chgnet(device)
    with contextlib.redirect_stdout(io.StringIO()):
        out = model.predict_structure(list(structures), task="e", batch_size=batch_size)
    out = out if isinstance(out, list) else [out]
    return [float(o["e"]) for o in out]


def covalent_distance_ok(structure, fraction: float | None = None) -> bool:
    """True when no pair of atoms is closer than ``fraction`` × (rᵢ + rⱼ) covalent radii."""
    return min_covalent_ratio(structure) >= (COVALENT_FRACTION if fraction is None else fraction)


def min_covalent_ratio(structure) -> float:
    """Smallest distance / (rᵢ + rⱼ) over all pairs (periodic images included); inf for one atom alone."""
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    radii = np.array([CovalentRadius.radius.get(site.specie.symbol, 1.5) for site in structure])
    i, j, _, distance = structure.get_neighbor_list(r=3.2 * radii.max())
    if len(distance) == 0:
        return math.inf
    return float(np.min(distance / (radii[i] + radii[j])))


class _PresetResults:
    """ASE calculator whose results are filled in from the batched CHGNet call."""

    implemented_properties = ("energy", "free_energy", "forces", "stress")

    def __init__(self):
        from ase.calculators.calculator import Calculator

        self.calculator = type("BatchedCHGNet", (Calculator,), {
            "implemented_properties": list(self.implemented_properties),
            "calculate": _not_preset,
        })()


def _not_preset(self, atoms=None, properties=None, system_changes=None):
    raise ModelError("internal: the relaxation asked for energies outside the batched evaluation")


class _CellMatrixFunctions:
    """``logm``/``expm``/``expm_frechet`` for ASE's ``FrechetCellFilter``, without repeated work.

    The filter's cell coordinates are ``log(F)`` of the deformation gradient ``F``: each step it
    sets ``F = expm(L)`` and on the next evaluation takes the logarithm of ``F`` (forces) and of
    ``c·F`` (positions, ``c`` the number of atoms) again. scipy's general ``logm`` (Schur
    decomposition, inverse scaling and squaring) of a 3×3 matrix was a fifth of the whole
    relaxation time; the logarithm of the matrix just made from ``L`` is ``L`` (to ~1e-15, the
    principal branch for the near-identity deformations of a relaxation). Any other matrix goes
    to scipy.

    The forces need the derivative of ``expm`` at ``L`` in each of the 9 unit directions, which
    ASE asks for one at a time (9 scipy calls, 0.9 ms); the first call computes all 9 at once
    from one batched ``expm`` of the block matrices ``[[L, E], [0, L]]`` (same values to 1e-15,
    0.1 ms) and the others read them.
    """

    #: Largest element-wise difference (relative to 1) at which a matrix is the one made by ``expm``.
    SAME_MATRIX = 1e-12

    def __init__(self, logm, expm, expm_frechet):
        self._logm, self._expm, self._expm_frechet = logm, expm, expm_frechet
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (expm(L), L)
        self._derivatives: tuple[np.ndarray, np.ndarray] | None = None  # (L, (9, 3, 3) derivatives)

    def expm(self, logarithm: np.ndarray) -> np.ndarray:
        matrix = self._expm(logarithm)
        self._last = (np.array(matrix, dtype=float), np.array(logarithm, dtype=float))
        return matrix

    def logm(self, matrix: np.ndarray) -> np.ndarray:
        # ASE takes the logarithm of F for the forces and of c·F (c = number of atoms) for the
        # positions; log(c·F) = ln(c)·I + log(F) for a scalar c > 0.
        matrix = np.asarray(matrix, dtype=float)
        known = [(np.eye(3), np.zeros((3, 3)))] if self._last is None else [self._last, (np.eye(3), np.zeros((3, 3)))]
        for made, logarithm in known:
            scale = np.trace(matrix) / np.trace(made)
            if scale > 0 and np.max(np.abs(matrix / scale - made)) <= self.SAME_MATRIX:
                return logarithm + np.log(scale) * np.eye(3)
        return self._logm(matrix)

    def expm_frechet(self, matrix, direction, compute_expm: bool = True, **options):
        direction = np.asarray(direction, dtype=float)
        unit = (direction.shape == (3, 3) and np.count_nonzero(direction) == 1 and direction.max() == 1.0)
        if compute_expm or options or not unit or np.shape(matrix) != (3, 3):
            return self._expm_frechet(matrix, direction, compute_expm=compute_expm, **options)
        if self._derivatives is None or not np.array_equal(self._derivatives[0], matrix):
            self._derivatives = (np.array(matrix, dtype=float), _unit_direction_derivatives(matrix))
        return self._derivatives[1][int(np.argmax(direction))].copy()


def _unit_direction_derivatives(matrix: np.ndarray) -> np.ndarray:
    """Fréchet derivatives of ``expm`` at the 3×3 ``matrix`` in the 9 unit directions (row-major
    order of the direction's 1), shape ``(9, 3, 3)``: upper-right blocks of ``expm([[A, E], [0, A]])``."""
    from scipy.linalg import expm

    blocks = np.zeros((9, 6, 6))
    blocks[:, :3, :3] = matrix
    blocks[:, 3:, 3:] = matrix
    blocks[:, :3, 3:] = np.eye(9).reshape(9, 3, 3)
    return expm(blocks)[:, :3, 3:]


class _Run:
    """One structure's relaxation state."""

    def __init__(self, structure, optimizer: str = "FIRE"):
        import ase.optimize
        from ase.filters import FrechetCellFilter
        from pymatgen.io.ase import AseAtomsAdaptor

        self.start = structure
        self.atoms = AseAtomsAdaptor.get_atoms(structure)
        self.atoms.calc = _PresetResults().calculator
        self.filter = FrechetCellFilter(self.atoms)
        utility = getattr(self.filter, "_utility", None)
        if utility is not None and all(hasattr(utility, name) for name in ("logm", "expm", "expm_frechet")):
            memo = _CellMatrixFunctions(utility.logm, utility.expm, utility.expm_frechet)
            utility.logm, utility.expm, utility.expm_frechet = memo.logm, memo.expm, memo.expm_frechet
        # The filter's forces (matrix logarithms of the cell) are needed twice per step, for the
        # convergence check and by the optimiser: computed once per evaluation.
        self._filter_forces = None
        filter_forces = self.filter.get_forces

        def cached_filter_forces(**kwargs):
            if self._filter_forces is None:
                self._filter_forces = filter_forces(**kwargs)
            return self._filter_forces.copy()

        self.filter.get_forces = cached_filter_forces
        self.optimizer = getattr(ase.optimize, optimizer)(self.filter, logfile=None)
        self.steps = 0
        self.energy_per_atom = math.nan
        self.max_force = math.inf
        self.done = False
        self.error: str | None = None
        self.converged = False

    def structure(self):
        from pymatgen.io.ase import AseAtomsAdaptor

        # A copy without the batched calculator: pymatgen keeps ``atoms.calc`` on the structure, and
        # that class cannot be pickled (the worker sends relaxed structures to the window).
        return AseAtomsAdaptor.get_structure(self.atoms.copy())

    def take(self, prediction: dict) -> None:
        """Store CHGNet's energy/forces/stress for the current geometry."""
        n = len(self.atoms)
        self.energy_per_atom = float(prediction["e"])
        calc = self.atoms.calc
        stress = np.asarray(prediction["s"], dtype=float) * GPA_TO_EV_PER_A3
        calc.results = {"energy": self.energy_per_atom * n, "free_energy": self.energy_per_atom * n,
                        "forces": np.asarray(prediction["f"], dtype=float), "stress": stress}
        calc.atoms = self.atoms.copy()
        self._filter_forces = None
        self.max_force = float(np.linalg.norm(self.filter.get_forces(), axis=1).max())


def relax_structures(structures: Sequence, *, fmax: float = DEFAULT_FMAX, max_steps: int = DEFAULT_MAX_STEPS,
                     device: str = "auto", progress: ProgressCallback | None = None,
                     cancel: CancelToken | None = None, batch_size: int = BATCH_SIZE,
                     optimizer: str = DEFAULT_OPTIMIZER) -> list[RelaxationResult]:
    """Relax ``structures`` (cell and positions) with CHGNet; one result per structure, in order.

    Parameters
    ----------
    fmax : float
        Convergence threshold on the largest force (eV/Å; cell forces included).
    max_steps : int
        Optimiser step cap per structure.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    progress, cancel
        ``progress(done, total, message)`` after every step; ``cancel`` is checked between steps
        (raises CancelledError).
    batch_size : int
        Structures per CHGNet evaluation.
    optimizer : str
        An ASE optimiser taking one energy/force evaluation per step (``FIRE``, ``BFGS``, ``LBFGS``).
    """
    if optimizer not in STEPPING_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(STEPPING_OPTIMIZERS)}, not {optimizer!r}")
    model = load_chgnet(device)
    runs = []
    for structure in structures:
        run = None
        try:
            run = _Run(structure, optimizer)
        except Exception as error:  # unreadable geometry: report it on this structure only
            logger.debug("relaxation set-up failed", exc_info=True)
            run = _FailedRun(structure, f"the structure cannot be relaxed ({error})")
        runs.append(run)
    total = len(runs)
    for step in range(max_steps + 1):
        active = [run for run in runs if not run.done]
        if not active:
            break
        if cancel is not None:
            cancel.raise_if_cancelled()
        _evaluate(model, active, batch_size)
        for run in active:
            _advance(run, fmax, step == max_steps)
        if progress is not None:
            progress(sum(run.done for run in runs), total, f"relaxing (step {step + 1})")
    return [_result(run) for run in runs]


class _FailedRun:
    def __init__(self, structure, error: str):
        self.start, self.error, self.done, self.steps = structure, error, True, 0


def _evaluate(model, runs: list, batch_size: int) -> None:
    """Batched CHGNet evaluations for the current geometries of ``runs``; marks failures."""
    geometries = []
    for run in runs:
        problem = _geometry_problem(run)
        if problem:
            run.error, run.done = problem, True
        else:
            geometries.append(run)
    for start in range(0, len(geometries), batch_size):
        chunk = geometries[start:start + batch_size]
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                predictions = energies_forces_stresses(model, [run.structure() for run in chunk])
        except Exception as error:  # one bad graph (e.g. isolated atom) fails the batch: retry one by one
            if len(chunk) == 1:
                chunk[0].error, chunk[0].done = f"CHGNet could not evaluate it ({error})", True
                continue
            for run in chunk:
                _evaluate(model, [run], 1)
            continue
        for run, prediction in zip(chunk, predictions):
            run.take(prediction)


def energies_forces_stresses(model, structures: Sequence) -> list[dict]:
    """CHGNet energy (eV/atom), forces (eV/Å, shape (n, 3)) and stress (GPa, (3, 3)) of each structure.

    The same numbers as ``model.predict_structure(task="efs")`` at about half the cost: CHGNet's own
    path takes two backward passes that also build second-order graphs (needed for training on
    forces); inference needs one first-order pass for positions and strains together.
    """
    import torch
    from chgnet.model.model import BatchedGraph

    graphs = [model.graph_converter(structure) for structure in structures]
    composition_energy = model.composition_model(graphs) if model.composition_model is not None else 0
    batch = BatchedGraph.from_graphs(graphs, bond_basis_expansion=model.bond_basis_expansion,
                                     angle_basis_expansion=model.angle_basis_expansion, compute_stress=True)
    with torch.enable_grad():
        prediction = model._compute(batch)
        energy = prediction["e"]  # per atom when the model is intensive (CHGNet's is)
        total = (energy * prediction["atoms_per_graph"]).sum() if model.is_intensive else energy.sum()
        gradients = torch.autograd.grad(total, [*batch.atom_positions, *batch.strains])
    per_atom = energy + composition_energy
    if not model.is_intensive:
        per_atom = per_atom / prediction["atoms_per_graph"]
    per_atom = per_atom.detach().cpu().numpy()
    count = len(graphs)
    volumes = batch.volumes.detach().cpu().numpy()
    return [{"e": float(per_atom[i]), "f": -gradients[i].detach().cpu().numpy(),
             "s": gradients[count + i].detach().cpu().numpy() / volumes[i] * EV_PER_A3_TO_GPA}
            for i in range(count)]


def _geometry_problem(run) -> str | None:
    """Why the current geometry is divergent, or None."""
    volume_ratio = run.atoms.get_volume() / run.start.volume
    if not math.isfinite(volume_ratio) or volume_ratio < VOLUME_RATIO_RANGE[0]:
        return f"the cell collapsed (volume ×{volume_ratio:.2f})"
    if volume_ratio > VOLUME_RATIO_RANGE[1]:
        return f"the cell exploded (volume ×{volume_ratio:.2f})"
    if len(run.atoms) > 1:
        distances = run.atoms.get_all_distances(mic=True)
        closest = float(np.min(distances[np.triu_indices(len(run.atoms), 1)]))
        if closest < MIN_PAIR_DISTANCE:
            return f"atoms collided ({closest:.2f} Å apart)"
    return None


def _advance(run, fmax: float, last: bool) -> None:
    """Convergence and divergence checks, then one FIRE step."""
    if run.done:
        return
    if not math.isfinite(run.energy_per_atom) or run.energy_per_atom > MAX_ENERGY_PER_ATOM:
        run.error, run.done = f"the energy blew up ({run.energy_per_atom:.1f} eV/atom)", True
        return
    if run.max_force <= fmax:
        run.done = run.converged = True
        return
    if last:
        run.done = True
        if run.max_force > NEAR_CONVERGED_FACTOR * fmax:
            run.error = (f"step cap of {run.steps} steps reached far from converged "
                         f"(largest force {run.max_force:.2f} eV/Å)")
        return
    run.optimizer.step()
    run._filter_forces = None  # the geometry moved
    run.steps += 1


def _result(run) -> RelaxationResult:
    before = space_group_label(run.start)
    if run.error is not None:
        return RelaxationResult(None, None, run.steps, _finite(getattr(run, "max_force", None)), None, None,
                                before, None, None, run.error)
    relaxed = run.structure()
    return RelaxationResult(
        structure=relaxed, energy_per_atom=run.energy_per_atom, steps=run.steps, max_force=run.max_force,
        volume_change_percent=100.0 * (relaxed.volume / run.start.volume - 1.0),
        rms_displacement=_rms_displacement(run.start, relaxed), space_group_before=before,
        space_group_after=space_group_label(relaxed), matches_unrelaxed=_matches(run.start, relaxed),
        error=None, converged=run.converged)


def _finite(value):
    return value if value is not None and math.isfinite(value) else None


def _rms_displacement(start, relaxed) -> float:
    """RMS atom displacement (Å): fractional shifts (minimum image) in the relaxed cell."""
    shift = relaxed.frac_coords - start.frac_coords
    shift -= np.round(shift)
    cartesian = relaxed.lattice.get_cartesian_coords(shift)
    cartesian -= cartesian.mean(axis=0)  # a rigid translation is no displacement
    return float(np.sqrt(np.mean(np.sum(cartesian ** 2, axis=1))))


def _matches(start, relaxed) -> bool | None:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    try:
        return bool(StructureMatcher().fit(start, relaxed))
    except Exception:  # matcher failures on odd cells mean "cannot tell"
        return None
