"""Generating candidate crystals with the ICSG3D pipeline, and the funnel of filters after it.

Two generators share the funnel: the paper's cubic model (``density_vae``, conventional cubic
cells in a box with a margin) and the periodic model (``periodic_vae``, any crystal system: a
periodic map over the primitive, Niggli-reduced cell, see :mod:`periodic_density`). Each base
goes to the model that handles it best (:meth:`CrystalGenerator.model_for`): cubic crystals to
the cubic model except ABX3 perovskites (:data:`PERIODIC_CUBIC_CLASSES`), everything else to the
periodic model.

latent z (around a base, from the prior, or on a line between two bases) + condition decile
→ VAE decoder → density, coordinate channels and species labels → segmentation →
pymatgen Structure → eight predicted properties → filters (paper Table 2).

The species labels come from the VAE decoder's own species head, not from a UNet run on the
decoded density as in the paper: with σ = ionic radius the density of eq. 1 hardly tells
elements apart (the UNet labelled 32 % of atom voxels right and no reconstruction matched),
while the decoder, whose encoder sees each voxel's element, carries the species in the latent.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from app.engine.core.oxidation import charge_balanced
from app.engine.core.cancel import CancelToken, ProgressCallback
from app.engine.generation.density import density_from_model, encode, lattice_from_coords, model_input, species_features
from app.engine.core.errors import CrystalDesignerError, ModelError, StructureReadError
from app.engine.core.property_table import PROPERTY_KEYS
from app.engine.generation.segmentation import decode
# The settings, modes, stages and rules live in ``settings``; re-exported for callers of this module.
from app.engine.generation.settings import (FUNNEL_STAGE_KEYS, FUNNEL_STAGES, MODES,  # noqa: F401
                                           MODES_WITH_BASE, MODES_WITH_SECOND, GenerationSettings,
                                           decile_of, in_windows)
from app.engine.core.symmetry import format_space_group, space_group

logger = logging.getLogger(__name__)

#: Decoded cubic cells outside this range (Å) are rejected before segmentation. No real cubic
#: conventional cell is below ~2.8 Å, and an untrained or diverging decoder can give lengths of
#: 1e-5 Å, whose neighbour search would enumerate billions of periodic images.
PLAUSIBLE_CELL_LENGTH = (2.0, 40.0)

#: Maps whose species logits are brought to full resolution at once (bounds peak memory:
#: ~11 MB of logits per map, not speed).
SPECIES_CHUNK = 8

#: Decoded maps are segmented in this many worker processes at most (segmentation is plain
#: numpy/scipy work on one core per map and the slowest step of generation).
MAX_SEGMENTATION_WORKERS = 8
#: Batches with fewer maps are segmented in this process (a worker pool costs ~2 s to start).
PARALLEL_MIN_MAPS = 16

#: Decoded regions smaller than this fraction of a whole ion of their element are fragments of
#: a neighbour, not atoms (see ``segmentation.sites_from_maps``). Chosen on training cells
#: (perov_5 and MP): 0.1 removed most extra sites without dropping real ones; 0.2 and more
#: dropped real atoms of MP cells.
MIN_BALL_FRACTION = 0.1

#: Model names of :meth:`CrystalGenerator.model_for`.
CUBIC, PERIODIC = "cubic", "periodic"
#: Cubic bases of these composition classes (sorted element amounts of the reduced formula)
#: go to the periodic model, which reconstructs them better (validation perov_5 cells: 90 %
#: matched against 68 %); other cubic bases stay with the cubic model (validation MP cubic
#: cells: 49 % against 29 %). See the ``periodic_vae`` and ``density_vae`` cards.
PERIODIC_CUBIC_CLASSES = frozenset({(1, 1, 3)})


@dataclass
class Candidate:
    """One generated crystal and everything known about it.

    ``density`` (shape ``(G, G, G)``, float16, Z/Å³) is kept only for candidates that pass the
    enabled filters, so long runs stream instead of hoarding maps.
    """

    index: int
    structure: object | None
    formula: str | None
    properties: dict[str, float | None]
    flags: dict[str, bool]
    latent_distance: float
    kept: bool = False
    density: np.ndarray | None = None
    space_group: str | None = None
    error: str | None = None
    #: Filled by the last stages (``assessment``): the RelaxationResult, the relaxed crystal, the
    #: decoded crystal's predictions (``properties`` then describe the relaxed one), E_hull (eV/atom),
    #: its decomposition ("SrO + TiO2"), why E_hull is missing, the Novelty, why it was dropped.
    relaxation: object | None = None
    relaxed_structure: object | None = None
    unrelaxed_properties: dict[str, float | None] | None = None
    e_above_hull: float | None = None
    decomposition: str | None = None
    hull_error: str | None = None
    novelty: object | None = None
    rejection: str | None = None
    #: The sampled latent vector z (shape ``(latent,)``, float32) of kept candidates (the latent map).
    latent: np.ndarray | None = None


@dataclass
class GenerationResult:
    candidates: list[Candidate]
    funnel: dict[str, int]
    #: Stable (near the hull), unique, novel candidates (see ``assessment``).
    sun: int = 0

    @property
    def kept(self) -> list[Candidate]:
        return [c for c in self.candidates if c.kept]


def _segment(job: tuple[np.ndarray, np.ndarray, float]) -> tuple[object | None, str | None]:
    """Crystal (or None and the reason) from one decoded map: ``(density, species, cell length Å)``."""
    density, species, length = job
    try:
        return decode(density, species, [length] * 3, harmonise=True, min_ball_fraction=MIN_BALL_FRACTION), None
    except (StructureReadError, ValueError) as error:
        return None, str(error)


def bonds_ok(structure, fraction: float | None = None) -> bool:
    """True if no two atoms (periodic images included) are closer than ``fraction`` × (rᵢ + rⱼ)
    covalent radii (default: the stability package's ``COVALENT_FRACTION``, 0.6, chosen on the
    training crystals; the collapsing candidates seen around perovskites had pairs at 0.3–0.55)."""
    from app.engine.stability.relax import covalent_distance_ok

    return covalent_distance_ok(structure, fraction)


def minimum_distance_ok(structure, min_distance: float) -> bool:
    """True if no two atoms (periodic images included) are closer than ``min_distance`` Å."""
    centers, _, _, _ = structure.get_neighbor_list(min_distance)
    return len(centers) == 0


@dataclass
class MissingHull:
    """Stands in for the reference hull when none can be loaded: every look-up says why."""

    reason: str

    def e_above_hull(self, composition, formation_energy_per_atom):
        from types import SimpleNamespace

        return SimpleNamespace(e_above_hull=None, decomposition=None, error=self.reason)


class CrystalGenerator:
    """The trained VAE + property predictor, ready to generate.

    Parameters
    ----------
    vae : ConditionalVAE3D, optional
        Already constructed network (tests); by default the shipped ``density_vae`` is loaded
        and verified.
    predictor : PropertyPredictor, optional
    training_index : object, optional
        Unused; kept so older callers still construct a generator.
    structure_index : StructureIndex, optional
        Known crystals for the structural novelty stage (default: the shipped index, loaded on
        first use).
    hull : ReferenceHull, optional
        Reference convex hull (default: the shipped one, loaded on first use).
    relax : callable, optional
        Relaxation function (default ``app.engine.stability.relax.relax_structures``).
    prior : LatentPrior, optional
        Where random-mode latents come from (``app.engine.generation.prior``); by default the
        shipped VAE's aggregate-posterior prior when one ships, else N(0, I).
    decile_edges : sequence of 9 float, optional
        Formation-energy decile boundaries (eV/atom); read from the VAE's manifest by default.
    periodic_vae : PeriodicVAE, optional
        The all-crystal-system model; by default the shipped ``periodic_vae`` when the cubic VAE
        is the shipped one too and the manifest has it (else none: only cubic bases).
    periodic_decile_edges : sequence of 9 float, optional
        Its decile edges (eV/atom); read from its manifest entry by default.
    segmentation_workers : int, optional
        Processes that segment decoded maps in parallel (default: CPU count, at most
        :data:`MAX_SEGMENTATION_WORKERS`; 1 = in this process). Started on the first batch of at
        least :data:`PARALLEL_MIN_MAPS` maps; :meth:`close` stops them.
    """

    def __init__(self, device: str = "auto", folder: Path | None = None, vae=None, predictor=None,
                 training_index=None, decile_edges: Sequence[float] | None = None,
                 segmentation_workers: int | None = None, structure_index=None, hull=None, relax=None,
                 prior=None, periodic_vae=None, periodic_decile_edges: Sequence[float] | None = None):
        import torch

        import app.engine.generation.voxel_models  # noqa: F401  (registers the "density_vae" kind)
        from app.engine.core.devices import select_device
        from app.engine.core.registry import load_model
        from app.engine.properties.predictor import PropertyPredictor

        self.device = select_device(device)
        self._torch = torch
        shipped = vae is None
        if vae is None:  # the shipped (or ``folder``'s) VAE; see :meth:`from_models`
            vae, vae_entry = load_model("density_vae", folder)
            decile_edges = vae_entry["architecture"].get("decile_edges_eV_per_atom")
            if prior is None:  # random mode samples the shipped aggregate-posterior prior, if any
                prior = _shipped_prior("density_vae", folder, vae)
        if decile_edges is None or len(decile_edges) != 9:
            raise ModelError("The generator needs the 9 formation-energy decile edges of its VAE.")
        if not vae.config.species:
            raise ModelError("The generator's VAE has no species vocabulary.")
        self.vae = vae.to(self.device).eval()
        if periodic_vae is None and shipped:
            periodic_vae, periodic_decile_edges = _shipped_periodic(folder)
        self.periodic = None if periodic_vae is None else periodic_vae.to(self.device).eval()
        if self.periodic is not None and (periodic_decile_edges is None or len(periodic_decile_edges) != 9):
            raise ModelError("The periodic generator needs the 9 formation-energy decile edges of its VAE.")
        self.periodic_decile_edges = (None if self.periodic is None
                                      else np.asarray(periodic_decile_edges, dtype=np.float64))
        self.periodic_prior = _shipped_prior("periodic_vae", folder, self.periodic) if shipped else None
        self.prior = prior
        self.decile_edges = np.asarray(decile_edges, dtype=np.float64)
        self.predictor = predictor or PropertyPredictor.from_models(folder, device=str(self.device))
        self.training_index = training_index
        self.folder = folder
        self._structure_index, self._hull, self._relax = structure_index, hull, relax
        self.segmentation_workers = max(1, segmentation_workers if segmentation_workers is not None
                                        else min(os.cpu_count() or 1, MAX_SEGMENTATION_WORKERS))
        self._pool = None

    @classmethod
    def from_models(cls, folder: Path | None = None, device: str = "auto", **options) -> "CrystalGenerator":
        """The generator of the models in ``folder`` (default: the shipped ``models/``): the VAE, its
        decile edges and the property predictor, verified against the manifest; ``options`` as for
        the constructor (``segmentation_workers``, ``predictor`` …)."""
        return cls(device=device, folder=folder, **options)

    @property
    def structure_index(self):
        """Known crystals for the novelty stage (loaded on first use)."""
        if self._structure_index is None:
            from app.engine.generation.novelty import StructureIndex

            self._structure_index = StructureIndex.load(self.folder)
        return self._structure_index

    @property
    def hull(self):
        """Reference convex hull (loaded on first use); ModelError if this installation has none."""
        if self._hull is None:
            try:
                from app.engine.stability.hull import ReferenceHull
            except ImportError as error:
                raise ModelError(f"This installation has no reference convex hull ({error}).") from error
            self._hull = ReferenceHull.load(self.folder)
        return self._hull

    @property
    def relax(self):
        """The relaxation function of the last stages; ModelError if relaxation is unavailable."""
        if self._relax is None:
            try:
                from app.engine.stability.relax import relax_structures
            except ImportError as error:
                raise ModelError(f"Relaxation is not available in this installation ({error}).") from error
            self._relax = relax_structures
        return self._relax

    def close(self) -> None:
        """Stop the segmentation worker processes, if any were started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _segment_all(self, jobs: list) -> list:
        if self.segmentation_workers <= 1 or len(jobs) < PARALLEL_MIN_MAPS:
            return [_segment(job) for job in jobs]
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the caller may hold torch threads or be a GUI worker process.
            self._pool = ProcessPoolExecutor(self.segmentation_workers, mp_context=multiprocessing.get_context("spawn"))
        chunk = max(1, len(jobs) // (4 * self.segmentation_workers))
        return list(self._pool.map(_segment, jobs, chunksize=chunk))

    # -- encoding ----------------------------------------------------------------------------

    def decile_of(self, formation_energy: float) -> int:
        """Decile (0-9) of a formation energy per atom (eV/atom)."""
        return decile_of(formation_energy, self.decile_edges)

    def model_for(self, structure) -> str:
        """The model that takes this structure as a base: :data:`CUBIC` or :data:`PERIODIC`.

        Cubic crystals (conventional cell ≤ 40 sites) go to the cubic model unless their
        composition class is in :data:`PERIODIC_CUBIC_CLASSES`; any other ordered crystal whose
        primitive cell has ≤ 20 sites goes to the periodic model.

        Raises
        ------
        StructureReadError
            If no available model takes it; the message names the limit (primitive reduction is
            tried first).
        """
        from app.engine.generation.density import conventional_cubic_cell
        from app.engine.generation.periodic_density import standard_cell

        amounts = tuple(sorted(int(round(x)) for x in structure.composition.reduced_composition.values()))
        order = [PERIODIC, CUBIC] if amounts in PERIODIC_CUBIC_CLASSES else [CUBIC, PERIODIC]
        errors = []
        for model in order:
            if model == PERIODIC and self.periodic is None:
                continue
            try:
                conventional_cubic_cell(structure) if model == CUBIC else standard_cell(structure)
                return model
            except StructureReadError as error:
                errors.append(error)
        if self.periodic is None or len(errors) == 1:
            raise errors[0]
        # Both refused: the periodic model's reason (site limit, disorder) is the general one.
        raise errors[order.index(PERIODIC)]

    def latent_dim(self, model: str = CUBIC) -> int:
        """Latent size of a model."""
        return (self.periodic if model == PERIODIC else self.vae).config.latent_dim

    def edges_of(self, model: str = CUBIC) -> np.ndarray:
        """Formation-energy decile edges (eV/atom) of a model."""
        return self.periodic_decile_edges if model == PERIODIC else self.decile_edges

    def decile_of(self, formation_energy: float, model: str = CUBIC) -> int:
        """Decile (0-9) of a formation energy per atom (eV/atom) for a model."""
        return decile_of(formation_energy, self.edges_of(model))

    def encode_structure(self, structure, model: str = CUBIC) -> tuple[np.ndarray, int]:
        """Latent mean μ (shape ``(latent,)``) and predicted-Ef decile of a structure in a model's
        latent space (:data:`CUBIC`, the default, or :data:`PERIODIC`; :meth:`model_for` picks one).
        """
        from app.engine.properties.predictor import graph_for_prediction

        torch = self._torch
        if model == PERIODIC:
            from app.engine.generation.periodic_density import encode as periodic_encode, encoder_input
            from app.engine.generation.periodic_model import one_hot_condition as periodic_condition

            encoded = periodic_encode(structure)
            inputs = encoder_input(encoded.density, encoded.species)
            network, condition = self.periodic, periodic_condition
        else:
            from app.engine.generation.voxel_models import one_hot_condition as condition

            encoded = encode(structure)
            inputs = np.concatenate([model_input(encoded), species_features(encoded.species)])
            network = self.vae
        formation = float(self.predictor.predict_graphs([graph_for_prediction(encoded.structure)])
                          ["formation_energy"][0, 0])
        decile = self.decile_of(formation, model)
        with torch.inference_mode():
            maps = torch.from_numpy(inputs)[None].to(self.device)
            mu, _ = network.encode(maps, condition(torch.tensor([decile]), network.config.n_conditions)
                                   .to(self.device))
        return mu[0].float().cpu().numpy(), decile

    # -- decoding ----------------------------------------------------------------------------

    def decode_latents(self, z: np.ndarray, decile: int, model: str = CUBIC
                       ) -> list[tuple[object | None, np.ndarray, str | None]]:
        """Decode latent vectors (shape ``(n, latent)``) of a model to ``(structure or None, density, error)``."""
        if model == PERIODIC:
            return self._decode_periodic(z, decile)
        from app.engine.generation.voxel_models import one_hot_condition, species_from_logits, upsample_species

        torch = self._torch
        with torch.inference_mode():
            zt = torch.from_numpy(z.astype(np.float32)).to(self.device)
            condition = one_hot_condition(torch.full((len(z),), decile), self.vae.config.n_conditions).to(self.device)
            maps, block_logits = self.vae.decode(zt, condition)
            labels = np.concatenate([
                species_from_logits(upsample_species(block_logits[i:i + SPECIES_CHUNK].float()),
                                    self.vae.config.species).cpu().numpy()
                for i in range(0, len(maps), SPECIES_CHUNK)])
            maps = maps.float().cpu().numpy()
        # The decoded cell may come out slightly non-cubic; the cell uses the mean length.
        decoded_lengths = np.stack([lattice_from_coords(m[1:]) for m in maps]).mean(axis=1)
        lengths = np.clip(decoded_lengths, *PLAUSIBLE_CELL_LENGTH)
        out: list = [None] * len(maps)
        jobs, positions = [], []
        for n, (channels, species, length, decoded_length) in enumerate(zip(maps, labels, lengths, decoded_lengths)):
            density = density_from_model(channels[0])
            if not PLAUSIBLE_CELL_LENGTH[0] <= decoded_length <= PLAUSIBLE_CELL_LENGTH[1]:
                low, high = PLAUSIBLE_CELL_LENGTH
                out[n] = (None, density, f"The decoded cell length ({decoded_length:.3g} Å) is outside the "
                                         f"plausible range {low:g}–{high:g} Å.")
                continue
            jobs.append((density, species.astype(np.int16), float(length)))
            positions.append(n)
        for n, job, (structure, error) in zip(positions, jobs, self._segment_all(jobs)):
            out[n] = (structure, job[0], error)
        return out

    def _decode_periodic(self, z: np.ndarray, decile: int) -> list[tuple[object | None, np.ndarray, str | None]]:
        """Decode periodic-model latents (shape ``(n, latent)``) to ``(structure or None, density, error)``
        with :func:`periodic_model.decode_structures`, the decoder the evaluation uses too."""
        from app.engine.generation.periodic_model import decode_structures

        return decode_structures(self.periodic, z, decile)

    def reconstruct(self, structure):
        """Encode (z = μ, condition = the structure's predicted-Ef decile) and decode again, with
        the model :meth:`model_for` picks."""
        model = self.model_for(structure)
        mu, decile = self.encode_structure(structure, model)
        decoded, _, error = self.decode_latents(mu[None], decile, model)[0]
        if decoded is None:
            raise StructureReadError(error or "The reconstruction produced no crystal.")
        return decoded

    # -- generation --------------------------------------------------------------------------

    def _latents(self, settings: GenerationSettings, rng: np.random.Generator, base_mu, second_mu,
                 decile: int | None = None, model: str = CUBIC) -> np.ndarray:
        latent = self.latent_dim(model)
        if settings.mode == "around":
            return base_mu[None] + settings.sigma * rng.standard_normal((settings.count, latent))
        if settings.mode == "random":
            prior = self.periodic_prior if model == PERIODIC else self.prior
            if prior is not None:
                return prior.sample(settings.count, rng, condition=decile)
            return rng.standard_normal((settings.count, latent))
        t = np.linspace(0.0, 1.0, settings.count)[:, None]
        return (1 - t) * base_mu[None] + t * second_mu[None] + settings.sigma * rng.standard_normal(
            (settings.count, latent))

    def generate(self, settings: GenerationSettings, base=None, second=None,
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                 on_candidate: Callable[[Candidate], None] | None = None,
                 model: str | None = None) -> GenerationResult:
        """Generate and filter candidates.

        Parameters
        ----------
        base, second : pymatgen.core.Structure, optional
            Base structure (``around``, ``interpolate``) and second end point (``interpolate``).
        progress : callable, optional
            ``progress(done, total, message)`` after every batch.
        cancel : CancelToken, optional
            Checked between batches; raises :class:`CancelledError`.
        on_candidate : callable, optional
            Called with every candidate as soon as it is filtered (streaming).
        model : str, optional
            :data:`CUBIC` or :data:`PERIODIC`; by default the model :meth:`model_for` picks for
            the base (both end points for interpolation), the cubic one without a base.

        Returns
        -------
        GenerationResult
            All candidates (maps only on kept ones) and the funnel counts.
        """
        settings.validate()  # built valid; checked again in case a caller bypassed the constructor
        if settings.mode in MODES_WITH_BASE and base is None:
            raise CrystalDesignerError(f"Mode '{settings.mode}' needs a base structure.")
        if settings.mode in MODES_WITH_SECOND and second is None:
            raise CrystalDesignerError("Interpolation needs a second structure.")
        rng = np.random.default_rng(settings.seed)
        base_mu = second_mu = base_decile = None
        base_formula = None
        model = model or self._model_for_bases(base, second)
        if model == PERIODIC and self.periodic is None:
            raise ModelError("The periodic generator (periodic_vae) is not installed.")
        if base is not None:
            base_mu, base_decile = self.encode_structure(base, model)
            base_formula = base.composition.reduced_formula
        if second is not None:
            second_mu, _ = self.encode_structure(second, model)
        decile = settings.condition_decile(self.edges_of(model), base_decile)
        latents = self._latents(settings, rng, base_mu, second_mu, decile, model)
        reference = base_mu if base_mu is not None else np.zeros(latents.shape[1])

        _start_warm_up(import_relaxation=settings.relax and self._relax is None)
        funnel = dict.fromkeys(FUNNEL_STAGE_KEYS, 0)
        candidates: list[Candidate] = []
        unique_kept: dict[str, list] = {}
        total = len(latents)
        for start in range(0, total, settings.batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            chunk = latents[start:start + settings.batch_size]
            decoded = self._decode_periodic(chunk, decile) if model == PERIODIC else self.decode_latents(chunk, decile)
            structures = [s for s, _, _ in decoded if s is not None]
            predictions = iter(self.predictor.predict(structures)) if structures else iter(())
            for offset, (structure, density, error) in enumerate(decoded):
                index = start + offset
                prediction = next(predictions) if structure is not None else None
                candidate = self._judge(index, structure, density, error, prediction, settings, base_formula,
                                        float(np.linalg.norm(chunk[offset] - reference)), unique_kept, funnel)
                if candidate.kept:
                    candidate.latent = chunk[offset].astype(np.float32)
                candidates.append(candidate)
                if on_candidate is not None:
                    on_candidate(candidate)
            if progress is not None:
                progress(min(start + settings.batch_size, total), total, f"{funnel['unique']} kept")
        return GenerationResult(candidates, funnel, self._assess(candidates, funnel, settings, base, progress, cancel))

    def _model_for_bases(self, base, second) -> str:
        """One model for both end points: the base's, or the periodic one if they differ."""
        if base is None:
            return CUBIC
        model = self.model_for(base)
        if second is not None and self.model_for(second) != model:
            from app.engine.generation.periodic_density import standard_cell

            if self.periodic is None:
                raise CrystalDesignerError("Both end points of an interpolation must be taken by the same model.")
            standard_cell(base)
            standard_cell(second)
            return PERIODIC
        return model

    def _assess(self, candidates, funnel, settings, base, progress, cancel) -> int:
        """The relaxation, hull and novelty stages (``assessment``); returns the S.U.N. count."""
        from app.engine.generation.assessment import assess

        import dataclasses

        # A missing hull or relaxation (a partial installation) cannot judge a candidate, so its stage
        # removes nothing; the reason stays on every candidate (hull_error) and in the log.
        try:
            hull = self.hull
        except ModelError as error:
            logger.warning("%s", error)
            hull = MissingHull(str(error))
            settings = dataclasses.replace(settings, require_near_hull=False)
        relax = None
        if settings.relax:
            try:
                relax = self.relax
            except ModelError as error:
                logger.warning("%s Candidates are not relaxed.", error)
                settings = dataclasses.replace(settings, relax=False, relax_all=False)
        return assess(candidates, funnel, settings, base=base, predictor=self.predictor,
                      structure_index=self.structure_index, hull=hull, relax=relax, device=str(self.device),
                      progress=progress, cancel=cancel)

    def _judge(self, index, structure, density, error, prediction, settings: GenerationSettings, base_formula,
               latent_distance, unique_kept, funnel) -> Candidate:
        funnel["generated"] += 1
        if structure is None or isinstance(prediction, Exception):
            message = error or str(prediction)
            return Candidate(index, None, None, {k: None for k in PROPERTY_KEYS}, {"decoded": False},
                             latent_distance, error=message)
        formula = structure.composition.reduced_formula
        values = prediction.values
        flags = {"decoded": True}
        flags["distance_ok"] = minimum_distance_ok(structure, settings.min_distance)
        flags["bonds_ok"] = flags["distance_ok"] and bonds_ok(structure)
        flags["charge_balanced"] = charge_balanced(formula)
        flags["same_formula"] = base_formula is None or formula == base_formula
        symmetry = space_group(structure)
        flags["in_windows"] = in_windows(values, settings.property_windows)
        passing = True
        for key in ("decoded", "distance_ok", "bonds_ok", "charge_balanced", "same_formula", "in_windows"):
            passing = passing and (flags[key] or not settings.removes(key))
            funnel[key] += int(passing)
        flags["unique"] = True
        reduced = None
        if passing and unique_kept.get(formula):
            reduced = _reduced_for_matching(structure)
            flags["unique"] = not any(_matches_reduced(reduced, other) for other in unique_kept[formula])
        kept = passing and (flags["unique"] or not settings.removes("unique"))
        funnel["unique"] += int(kept)
        if kept:
            unique_kept.setdefault(formula, []).append(reduced if reduced is not None
                                                       else _reduced_for_matching(structure))
        return Candidate(index, structure, formula, dict(values), flags, latent_distance, kept=kept,
                         space_group=format_space_group(symmetry),
                         density=density.astype(np.float16) if kept else None)

    @staticmethod
    def _matches(a, b) -> bool:
        """StructureMatcher equality of the uniqueness stage (stol 0.5, ltol 0.3, 10°, no scaling)."""
        return _matches_reduced(_reduced_for_matching(a), _reduced_for_matching(b))


_UNIQUENESS_MATCHER = None


def _uniqueness_matcher():
    global _UNIQUENESS_MATCHER
    if _UNIQUENESS_MATCHER is None:
        from pymatgen.analysis.structure_matcher import StructureMatcher

        _UNIQUENESS_MATCHER = StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10, scale=False)
    return _UNIQUENESS_MATCHER


def _reduced_for_matching(structure):
    """The Niggli-reduced primitive cell that ``StructureMatcher.fit`` would compute for this
    structure on every comparison; computed once per candidate, it is reused for every kept
    crystal of the same formula (``fit(..., skip_structure_reduction=True)``), which gives the
    same answer as ``fit`` on the unreduced structures."""
    return _uniqueness_matcher()._get_reduced_structure(structure, primitive_cell=True, niggli=True)


def _matches_reduced(a, b) -> bool:
    """StructureMatcher equality of two structures already reduced by :func:`_reduced_for_matching`."""
    return _uniqueness_matcher().fit(a, b, skip_structure_reduction=True)


def _warm_up(import_relaxation: bool) -> None:
    """Load what later stages need the first time they run in a process: pymatgen's table of
    oxidation-state probabilities (the charge-balance filter) and the CHGNet package (the
    relaxation stage). Run in a background thread while the first batches decode, so these
    seconds of one-off loading overlap with the decoder's work instead of adding to it."""
    try:
        charge_balanced("NaCl")
        if import_relaxation:
            import chgnet.model  # noqa: F401
    except Exception:  # noqa: BLE001 (a broken part is reported by the stage that needs it)
        logger.debug("Warm-up of the filters and the relaxation failed", exc_info=True)


_WARM_UP_STARTED = False


def _start_warm_up(import_relaxation: bool) -> None:
    """Start :func:`_warm_up` once per process (again if the relaxation is first asked for later)."""
    global _WARM_UP_STARTED
    import sys
    import threading

    if _WARM_UP_STARTED and (not import_relaxation or "chgnet.model" in sys.modules):
        return
    _WARM_UP_STARTED = True
    threading.Thread(target=_warm_up, args=(import_relaxation,), name="generation-warm-up", daemon=True).start()


def _shipped_periodic(folder: Path | None):
    """The shipped periodic VAE and its decile edges, or (None, None) if the manifest has none."""
    import app.engine.generation.periodic_model  # noqa: F401  (registers the "periodic_vae" kind)
    from app.engine.core.registry import load_manifest, load_model

    if "periodic_vae" not in load_manifest(folder):
        return None, None
    model, entry = load_model("periodic_vae", folder)
    return model, entry["architecture"].get("decile_edges_eV_per_atom")


def _shipped_prior(name: str, folder: Path | None, model):
    """The shipped latent prior of a model, or None (no model, no prior, or no prior module)."""
    if model is None:
        return None
    try:
        from app.engine.generation.prior import load_prior
    except ImportError:
        return None
    return load_prior(name, folder, model.config.latent_dim)
