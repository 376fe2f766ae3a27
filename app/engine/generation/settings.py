"""What one generation run asks for, and the rules every part of the app shares about it.

A light module (no torch, no pymatgen): the window, the worker, the command line and the
generator all import it, so each rule exists once:

- :class:`GenerationSettings`, validated when it is built, with readable bounds;
- :data:`MODES` and their labels;
- :data:`FUNNEL_STAGES`: each stage's key (the candidate flag it sets), label, the words shown
  when a candidate fails it, and which setting switches it on as a filter;
- the condition rule: a formation energy per atom → a decile of the VAE's training data;
- the property-window test used by the generator's funnel and the results table's filter.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from app.engine.core.errors import CrystalDesignerError
from app.engine.core.property_table import PROPERTY_KEYS
from app.engine.stability.formation import DEFAULT_HULL_ENERGY, HULL_ENERGY_SOURCES

Window = tuple[float | None, float | None]
Windows = dict[str, Window]

# --- modes --------------------------------------------------------------------------------------

#: ``{mode key: label shown to users}``.
MODE_LABELS: dict[str, str] = {
    "around": "Around the base",
    "random": "Random (prior)",
    "interpolate": "Interpolate base → second",
}
MODES: tuple[str, ...] = tuple(MODE_LABELS)
#: Modes that start from a base structure / that also need a second one.
MODES_WITH_BASE = ("around", "interpolate")
MODES_WITH_SECOND = ("interpolate",)


# --- funnel stages ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FunnelStage:
    """One stage of the funnel of filters after decoding.

    Attributes
    ----------
    key : str
        Stage key, the funnel count's key and the candidate flag (True = passed).
    label : str
        What passing means, as shown in the funnel ("Charge balanced").
    rejection : str
        Why a candidate that failed it was rejected ("not charge balanced"); "" for ``generated``.
    switch : str or None
        The :class:`GenerationSettings` field whose truth makes the stage remove candidates
        (None: it always does). Every stage is evaluated and reported either way.
    validity : bool
        Part of the results table's "Valid" column (the crystal is physically sound).
    """

    key: str
    label: str
    rejection: str
    switch: str | None = None
    validity: bool = False


#: The stages in the order they are applied. Adding a stage is one entry here (plus, if it can be
#: switched off, its settings field); the funnel view, the rejection wording, the CLI and the
#: exported flag columns follow.
FUNNEL_STAGES: tuple[FunnelStage, ...] = (
    FunnelStage("generated", "Generated", ""),
    FunnelStage("decoded", "Decoded to a crystal", "not decoded", validity=True),
    FunnelStage("distance_ok", "All distances > minimum", "atoms too close", validity=True),
    FunnelStage("bonds_ok", "No atoms closer than covalent radii allow", "atoms closer than covalent radii",
                validity=True),
    FunnelStage("charge_balanced", "Charge balanced", "not charge balanced", "require_charge_balance", validity=True),
    FunnelStage("same_formula", "Same formula as base", "other formula", "require_same_formula"),
    FunnelStage("in_windows", "Properties in windows", "outside property windows", "property_windows"),
    FunnelStage("unique", "Unique", "duplicate", "require_unique"),
    # Relaxation, hull and structural novelty (see ``assessment``) run on the survivors.
    FunnelStage("relaxed", "Relaxed (CHGNet)", "relaxation failed", "relax"),
    FunnelStage("near_hull", "Near the convex hull", "far above the convex hull", "require_near_hull"),
    FunnelStage("structurally_novel", "Structurally novel", "known structure", "require_novel"),
)
FUNNEL_STAGE_KEYS: tuple[str, ...] = tuple(stage.key for stage in FUNNEL_STAGES)
_STAGES_BY_KEY = {stage.key: stage for stage in FUNNEL_STAGES}


def funnel_stage(key: str) -> FunnelStage:
    """The stage named ``key`` (KeyError for unknown keys)."""
    return _STAGES_BY_KEY[key]


def failed_stages(flags: Mapping[str, bool], validity_only: bool = False) -> list[FunnelStage]:
    """The stages a candidate with these flags failed, in funnel order (missing flags: not failed)."""
    return [stage for stage in FUNNEL_STAGES
            if flags.get(stage.key) is False and (stage.validity or not validity_only)]


# --- the condition: formation-energy deciles ----------------------------------------------------

#: The VAE is conditioned on one of this many formation-energy deciles (0 = lowest energies).
N_DECILES = 10


def decile_of(formation_energy: float, edges: Sequence[float]) -> int:
    """Decile 0 … 9 of a formation energy per atom (eV/atom), given the 9 ascending decile edges.

    An energy equal to an edge belongs to the lower decile.
    """
    if len(edges) != N_DECILES - 1:
        raise CrystalDesignerError(f"The condition needs {N_DECILES - 1} decile edges, not {len(edges)}.")
    return bisect.bisect_left(list(edges), float(formation_energy))


# --- property windows ---------------------------------------------------------------------------

def in_window(value: float | None, window: Window) -> bool:
    """True if ``value`` is known and inside ``(min, max)`` (bounds inclusive, None = unbounded)."""
    low, high = window
    return value is not None and (low is None or value >= low) and (high is None or value <= high)


def in_windows(values: Mapping[str, float | None], windows: Mapping[str, Window]) -> bool:
    """True if every windowed property is known and inside its window (no windows: True)."""
    return all(in_window(values.get(key), window) for key, window in windows.items())


# --- the settings -------------------------------------------------------------------------------

#: Readable bounds of the numeric settings (the window's spin boxes use them too).
COUNT_RANGE = (1, 1_000_000)
SIGMA_RANGE = (0.0, 10.0)            # latent units
SEED_RANGE = (0, 2**31 - 1)
MIN_DISTANCE_RANGE = (0.0, 5.0)      # Å
FORMATION_ENERGY_RANGE = (-10.0, 5.0)  # eV/atom
BATCH_SIZE_RANGE = (1, 4096)
#: Default threshold of the near-hull stage (eV/atom): a common "metastable but makeable" bound.
DEFAULT_MAX_E_ABOVE_HULL = 0.1
#: Default latent spread around the base. 200 samples around three held-out ABX3 perovskites
#: (``benchmarks/candidate_yield.py``; AsPtSO2, OsRhNOF, NbHgO3) gave 0, 0 and 1 stable, unique, novel
#: candidates at σ 0.5 (8–17 unique: the decoder mostly returns the base or copies of it), 12, 1 and
#: 26 at σ 1.5 (74–141 unique), and 12, 2 and 20 at σ 1.5 with decile 0, so the base's own decile
#: stays. A wider spread costs more relaxations (100–260 against 12–50 CPU-s per 200 samples).
DEFAULT_SIGMA = 1.5


def _within(value, bounds) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and bounds[0] <= value <= bounds[1]


@dataclass(frozen=True)
class GenerationSettings:
    """What to generate and which filters to apply; checked when built.

    Attributes
    ----------
    mode : str
        ``around`` a base structure, ``random`` from the prior, ``interpolate`` between two.
    count : int
        Number of latent samples.
    sigma : float
        Standard deviation of z around the base (latent units).
    decile : int or None
        Formation-energy decile 0 (lowest) … 9 to condition on.
    target_formation_energy : float or None
        Formation energy per atom (eV/atom) to condition on; the engine turns it into the decile
        it falls in (:func:`decile_of`). At most one of ``decile`` and this; neither: the base's
        own decile (``random`` mode: 0).
    seed : int
        Random seed; equal settings and seed give equal candidates.
    batch_size : int
        Latent samples decoded at once.
    min_distance : float
        Smallest allowed interatomic distance (Å, periodic).
    require_charge_balance, require_same_formula, require_novel, require_unique : bool
        Which filters remove candidates (all are always evaluated and reported as flags).
        ``require_novel``: structural novelty (not the base, not a training crystal).
    property_windows : dict
        ``{property key: (min or None, max or None)}`` in the units of ``PROPERTIES``.
    relax : bool
        Relax the kept candidates (CHGNet) before the hull and novelty stages.
    relax_all : bool
        Relax every decoded candidate that passes the distance rules, not only the kept ones.
    relax_fmax : float
        Force convergence criterion (eV/Å).
    relax_steps : int
        Step cap of one relaxation.
    max_e_above_hull : float
        Threshold of the near-hull stage (eV/atom).
    require_near_hull : bool
        Whether the near-hull stage removes candidates.
    hull_energy : str
        Formation energy placed on the hull for relaxed candidates (:data:`HULL_ENERGY_SOURCES`).

    Raises
    ------
    CrystalDesignerError
        When built with impossible values (the message names the setting and its bounds).
    """

    mode: str = "around"
    count: int = 100
    sigma: float = DEFAULT_SIGMA
    decile: int | None = None
    target_formation_energy: float | None = None
    seed: int = 0
    batch_size: int = 32
    min_distance: float = 0.5
    require_charge_balance: bool = True
    require_same_formula: bool = False
    require_novel: bool = True
    require_unique: bool = True
    property_windows: Windows = field(default_factory=dict)
    relax: bool = True
    relax_all: bool = False
    relax_fmax: float = 0.1
    relax_steps: int = 300
    max_e_above_hull: float = DEFAULT_MAX_E_ABOVE_HULL
    require_near_hull: bool = True
    hull_energy: str = DEFAULT_HULL_ENERGY

    def __post_init__(self) -> None:
        self.validate()

    def problems(self) -> list[str]:
        """Readable descriptions of every impossible value (empty when the settings are usable)."""
        found = []
        if self.mode not in MODES:
            found.append(f"Unknown generation mode '{self.mode}'; choose {', '.join(MODES)}.")
        if not (isinstance(self.count, int) and _within(self.count, COUNT_RANGE)):
            found.append(f"The number of samples must be a whole number from {COUNT_RANGE[0]:,} to {COUNT_RANGE[1]:,}.")
        if not _within(self.sigma, SIGMA_RANGE):
            found.append(f"The spread σ must be between {SIGMA_RANGE[0]:g} and {SIGMA_RANGE[1]:g} (latent units).")
        if not (isinstance(self.seed, int) and _within(self.seed, SEED_RANGE)):
            found.append(f"The seed must be a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]:,}.")
        if not (isinstance(self.batch_size, int) and _within(self.batch_size, BATCH_SIZE_RANGE)):
            found.append(f"The batch size must be from {BATCH_SIZE_RANGE[0]} to {BATCH_SIZE_RANGE[1]}.")
        if not _within(self.min_distance, MIN_DISTANCE_RANGE):
            found.append(f"The minimum distance must be between {MIN_DISTANCE_RANGE[0]:g} and "
                         f"{MIN_DISTANCE_RANGE[1]:g} Å.")
        found.extend(self._condition_problems())
        for key, (low, high) in self.property_windows.items():
            if key not in PROPERTY_KEYS:
                found.append(f"Unknown property '{key}' in the property windows.")
            elif low is not None and high is not None and low > high:
                found.append(f"The window of {key} has its minimum above its maximum.")
        if self.hull_energy not in HULL_ENERGY_SOURCES:
            found.append(f"The hull energy source must be one of {', '.join(HULL_ENERGY_SOURCES)}.")
        if not (_within(self.max_e_above_hull, (0.0, math.inf))):
            found.append("The energy-above-hull threshold must be a non-negative number (eV/atom).")
        if not _within(self.relax_fmax, (1e-6, math.inf)) or not _within(self.relax_steps, (1, math.inf)):
            found.append("Relaxation needs a positive force threshold (eV/Å) and at least one step.")
        return found

    def _condition_problems(self) -> list[str]:
        found = []
        if self.decile is not None and not (isinstance(self.decile, int) and 0 <= self.decile < N_DECILES):
            found.append(f"The condition decile must be a whole number from 0 to {N_DECILES - 1}.")
        if self.target_formation_energy is not None and not _within(self.target_formation_energy,
                                                                     FORMATION_ENERGY_RANGE):
            low, high = FORMATION_ENERGY_RANGE
            found.append(f"The target formation energy must be between {low:g} and {high:g} eV/atom.")
        if self.decile is not None and self.target_formation_energy is not None:
            found.append("Condition on either a decile or a target formation energy, not both.")
        return found

    def validate(self) -> None:
        """Raise :class:`CrystalDesignerError` naming the first impossible value (done when built)."""
        problems = self.problems()
        if problems:
            raise CrystalDesignerError(problems[0])

    def removes(self, stage_key: str) -> bool:
        """Whether the funnel stage ``stage_key`` removes the candidates that fail it."""
        switch = funnel_stage(stage_key).switch
        return switch is None or bool(getattr(self, switch))

    def condition_decile(self, edges: Sequence[float], base_decile: int | None = None) -> int:
        """The decile to condition on: the chosen one, the target energy's, the base's, or 0.

        Parameters
        ----------
        edges : sequence of 9 float
            The VAE's formation-energy decile edges (eV/atom).
        base_decile : int, optional
            Decile of the base's predicted formation energy (None without a base).
        """
        if self.decile is not None:
            return self.decile
        if self.target_formation_energy is not None:
            return decile_of(self.target_formation_energy, edges)
        return 0 if base_decile is None else base_decile
