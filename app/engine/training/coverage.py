"""Coverage of generated crystals against a reference set, by the CDVAE protocol (Xie et al. 2022).

Each crystal gets a structure fingerprint (the mean over its sites of matminer's
``CrystalNNFingerprint.from_preset("ops")``, 61 numbers) and a composition fingerprint
(matminer's Magpie ``ElementProperty``, 132 numbers, standardised). A reference crystal is
*covered* (recall) when some generated crystal lies within both cutoffs of it; a generated
crystal is *precise* when it lies within both cutoffs of some reference crystal:

- COV-R = share of reference crystals covered,
- COV-P = precise generated crystals / all generated crystals (those that could not be decoded
  or fingerprinted count as imprecise, as in CDVAE).

CDVAE's cutoffs for perov_5 are 0.2 (structure) and 4 (composition); for MP-20 0.4 and 10.
Its composition scaler is a fixed mean/std vector; here the scaler is fitted on the
compositions of the generator's own training crystals (see :func:`fit_composition_scaler`),
so the composition distances are on the same footing (unit variance per feature over
Materials-Project-like data) without copying its constants.

Compositional validity is SMACT's charge-neutrality + Pauling electronegativity test as CDVAE
computes it (SMACT 2.2.1, CDVAE's pinned version): elements alone and all-metal alloys are
valid; otherwise some assignment of one oxidation state per element must be neutral with the
reduced counts and pass the Pauling test.

CrystalNN is slow (≈ 0.1–0.3 s per site on one core): fingerprints are cached per crystal
(identical decoded cells are fingerprinted once) and the reference set's fingerprints are
cached on disk.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: CDVAE's coverage cutoffs (structure fingerprint distance, standardised composition distance).
CDVAE_CUTOFFS = {"perov_5": (0.2, 4.0), "mp_20": (0.4, 10.0), "carbon_24": (0.2, 4.0)}

#: Published coverage (COV-R %, COV-P %) on perov_5, for the report.
PUBLISHED_PEROV5_COVERAGE = {
    "ICSG3D": (73.9, 10.1),
    "DiffCSP (10,000 samples)": (99.7, 98.3),
}

STRUCTURE_FINGERPRINT_SIZE = 61
COMPOSITION_FINGERPRINT_SIZE = 132
REFERENCE_CACHE_VERSION = 1


# -- compositional validity ----------------------------------------------------------------------

def smact_valid(composition, use_pauling_test: bool = True, include_alloys: bool = True) -> bool:
    """SMACT compositional validity of a composition, as CDVAE scores generated crystals.

    Parameters
    ----------
    composition : pymatgen.core.Composition or str
        The crystal's composition (counts are reduced by their greatest common divisor).
    use_pauling_test : bool
        Also require cations less electronegative than anions (SMACT ``pauling_test``).
    include_alloys : bool
        Count compositions made only of metals as valid.

    Returns
    -------
    bool
    """
    import smact
    from pymatgen.core import Composition
    from smact.screening import pauling_test

    composition = Composition(composition)
    amounts = composition.get_el_amt_dict()
    symbols = tuple(sorted(amounts))
    if len(symbols) == 1:
        return True
    if include_alloys and all(symbol in smact.metals for symbol in symbols):
        return True
    counts = np.array([amounts[s] for s in symbols])
    if not np.allclose(counts, np.round(counts)):
        return False
    counts = np.round(counts).astype(int)
    counts = counts // np.gcd.reduce(counts)
    elements = smact.element_dictionary(symbols)
    oxidation_states = [elements[s].oxidation_states for s in symbols]
    electronegativities = [elements[s].pauling_eneg for s in symbols]
    threshold = int(counts.max())
    stoichiometries = [(int(c),) for c in counts]
    for states in itertools.product(*oxidation_states):
        neutral, _ = smact.neutral_ratios(states, stoichs=stoichiometries, threshold=threshold)
        if not neutral:
            continue
        if not use_pauling_test:
            return True
        try:
            if pauling_test(states, electronegativities):
                return True
        except TypeError:  # an element without an electronegativity: SMACT/CDVAE let it pass
            return True
    return False


# -- fingerprints ------------------------------------------------------------------------------

_FEATURIZERS: dict = {}


def _featurizer(kind: str):
    if kind not in _FEATURIZERS:
        if kind == "structure":
            from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

            _FEATURIZERS[kind] = CrystalNNFingerprint.from_preset("ops")
        else:
            from matminer.featurizers.composition.composite import ElementProperty

            _FEATURIZERS[kind] = ElementProperty.from_preset("magpie", impute_nan=False)
    return _FEATURIZERS[kind]


def structure_key(structure) -> str:
    """Hash of a crystal's species, fractional coordinates and lattice (rounded), for caching."""
    digest = hashlib.sha1()
    digest.update(np.round(structure.lattice.matrix, 4).tobytes())
    digest.update(np.array(structure.atomic_numbers, dtype=np.int32).tobytes())
    digest.update(np.round(np.mod(structure.frac_coords, 1.0), 4).tobytes())
    return digest.hexdigest()


def structure_fingerprint(structure) -> np.ndarray | None:
    """CDVAE's structure fingerprint: mean over sites of the CrystalNN "ops" site fingerprint.

    Returns
    -------
    numpy.ndarray or None
        Shape ``(61,)``; None when CrystalNN fails on the crystal (CDVAE then counts it invalid).
    """
    featurizer = _featurizer("structure")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sites = [featurizer.featurize(structure, i) for i in range(len(structure))]
    except Exception as error:  # CrystalNN raises many kinds on degenerate cells; CDVAE catches all
        logger.debug("no CrystalNN fingerprint: %s", error)
        return None
    return np.asarray(sites, dtype=np.float64).mean(axis=0)


def composition_fingerprint(composition) -> np.ndarray:
    """Magpie composition fingerprint (matminer ``ElementProperty`` "magpie"), shape ``(132,)``,
    unscaled; NaN where an element lacks a property."""
    from pymatgen.core import Composition

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(_featurizer("composition").featurize(Composition(composition)), dtype=np.float64)


class FingerprintCache:
    """Structure and composition fingerprints, computed once per distinct crystal / formula."""

    def __init__(self):
        self._structures: dict[str, np.ndarray | None] = {}
        self._compositions: dict[str, np.ndarray] = {}

    def structure(self, structure) -> np.ndarray | None:
        key = structure_key(structure)
        if key not in self._structures:
            self._structures[key] = structure_fingerprint(structure)
        return self._structures[key]

    def composition(self, composition) -> np.ndarray:
        from pymatgen.core import Composition

        key = Composition(composition).reduced_formula
        if key not in self._compositions:
            self._compositions[key] = composition_fingerprint(composition)
        return self._compositions[key]


@dataclass
class Fingerprints:
    """Fingerprints of a set of crystals (rows of failed crystals are NaN, ``ok`` False).

    Attributes
    ----------
    structure : numpy.ndarray
        Shape ``(n, 61)``.
    composition : numpy.ndarray
        Shape ``(n, 132)``, unscaled Magpie features.
    ok : numpy.ndarray
        Shape ``(n,)``, bool: both fingerprints exist.
    """

    structure: np.ndarray
    composition: np.ndarray
    ok: np.ndarray

    def __len__(self) -> int:
        return len(self.ok)

    def subset(self, rows) -> "Fingerprints":
        return Fingerprints(self.structure[rows], self.composition[rows], self.ok[rows])


def fingerprint_structures(structures: Sequence, cache: FingerprintCache | None = None,
                           progress: Callable[[int, int], None] | None = None) -> Fingerprints:
    """Fingerprints of crystals (``None`` entries: crystals that were not decoded)."""
    cache = cache or FingerprintCache()
    n = len(structures)
    struct = np.full((n, STRUCTURE_FINGERPRINT_SIZE), np.nan)
    comp = np.full((n, COMPOSITION_FINGERPRINT_SIZE), np.nan)
    ok = np.zeros(n, dtype=bool)
    for i, structure in enumerate(structures):
        if structure is not None:
            s = cache.structure(structure)
            if s is not None:
                struct[i], comp[i], ok[i] = s, cache.composition(structure.composition), True
        if progress is not None and (i + 1) % 50 == 0:
            progress(i + 1, n)
    return Fingerprints(struct, comp, ok)


@dataclass
class CompositionScaler:
    """Per-feature standardisation of Magpie fingerprints (NaN → 0 after scaling, as CDVAE)."""

    mean: np.ndarray
    std: np.ndarray

    def transform(self, features: np.ndarray) -> np.ndarray:
        scaled = (features - self.mean) / self.std
        return np.nan_to_num(scaled, nan=0.0)


def fit_composition_scaler(compositions: Sequence) -> CompositionScaler:
    """Mean and standard deviation of the Magpie features of ``compositions`` (features with no
    spread get std 1)."""
    cache = FingerprintCache()
    features = np.stack([cache.composition(c) for c in compositions])
    mean = np.nanmean(features, axis=0)
    std = np.nanstd(features, axis=0)
    std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    return CompositionScaler(np.nan_to_num(mean), std)


# -- coverage ----------------------------------------------------------------------------------

def coverage(generated: Fingerprints, reference: Fingerprints, scaler: CompositionScaler,
             struct_cutoff: float, comp_cutoff: float, n_generated: int | None = None) -> dict:
    """COV-R, COV-P and the mean minimum distances (CDVAE's ``compute_cov``).

    Parameters
    ----------
    generated, reference : Fingerprints
        Generated crystals (failed rows allowed) and the reference crystals.
    scaler : CompositionScaler
    struct_cutoff, comp_cutoff : float
        Distance cutoffs (CDVAE perov_5: 0.2 and 4).
    n_generated : int, optional
        Denominator of COV-P (default: all generated rows, failed ones included).

    Returns
    -------
    dict
        ``cov_recall``, ``cov_precision`` (fractions), ``amsd_recall``, ``amsd_precision``,
        ``amcd_recall``, ``amcd_precision`` (mean minimum structure / composition distances),
        ``generated_fingerprinted``, ``reference_count``.
    """
    from scipy.spatial.distance import cdist

    n_generated = len(generated) if n_generated is None else n_generated
    gen = generated.subset(generated.ok)
    ref = reference.subset(reference.ok)
    if len(gen) == 0 or len(ref) == 0:
        return {"cov_recall": 0.0, "cov_precision": 0.0, "amsd_recall": None, "amsd_precision": None,
                "amcd_recall": None, "amcd_precision": None, "generated_fingerprinted": len(gen),
                "reference_count": len(ref)}
    struct_distance = cdist(gen.structure, ref.structure)
    comp_distance = cdist(scaler.transform(gen.composition), scaler.transform(ref.composition))
    # Like CDVAE: the nearest crystal by each fingerprint separately, then both cutoffs.
    struct_recall, struct_precision = struct_distance.min(axis=0), struct_distance.min(axis=1)
    comp_recall, comp_precision = comp_distance.min(axis=0), comp_distance.min(axis=1)
    recall = np.mean((struct_recall <= struct_cutoff) & (comp_recall <= comp_cutoff))
    precision = np.sum((struct_precision <= struct_cutoff) & (comp_precision <= comp_cutoff)) / max(n_generated, 1)
    return {"cov_recall": float(recall), "cov_precision": float(precision),
            "amsd_recall": float(struct_recall.mean()), "amsd_precision": float(struct_precision.mean()),
            "amcd_recall": float(comp_recall.mean()), "amcd_precision": float(comp_precision.mean()),
            "generated_fingerprinted": int(len(gen)), "reference_count": int(len(ref))}


# -- the perov_5 reference set -------------------------------------------------------------------

def perov5_reference_path(data_root: Path | None = None) -> Path:
    """The shared perov_5 ``val`` file (CDVAE's own test split is held back from this project)."""
    from app.engine.training.datasets import shared_data_dir

    return (data_root or shared_data_dir()) / "structures" / "perov_5" / "val.csv.gz"


def read_reference_cells(path: Path) -> tuple[list[str], list]:
    """Material ids (``perov_5-<id>``) and crystals of a CDVAE-style CSV with a ``cif`` column."""
    import csv
    import gzip

    from pymatgen.core import Structure

    csv.field_size_limit(1 << 24)
    ids, structures = [], []
    with gzip.open(path, "rt") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row in csv.DictReader(handle):
            ids.append(f"perov_5-{row['material_id']}")
            structures.append(Structure.from_str(row["cif"], fmt="cif"))
    return ids, structures


def reference_fingerprints(path: Path | None = None, chunk: int = 100,
                           progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, Fingerprints]:
    """Ids and fingerprints of the reference cells, cached (and resumed) in the featurisation cache.

    The cache file is keyed by the reference file's sha256 and saved every ``chunk`` cells, so an
    interrupted run continues where it stopped.
    """
    from app.engine.core.paths import cache_dir
    from app.engine.core.registry import sha256_of

    path = path or perov5_reference_path()
    digest = sha256_of(path)[:16]
    cache_path = cache_dir() / f"coverage_reference.{path.name.split('.')[0]}.{digest}.v{REFERENCE_CACHE_VERSION}.npz"
    ids, structures = read_reference_cells(path)
    n = len(structures)
    struct = np.full((n, STRUCTURE_FINGERPRINT_SIZE), np.nan)
    comp = np.full((n, COMPOSITION_FINGERPRINT_SIZE), np.nan)
    ok = np.zeros(n, dtype=bool)
    done = 0
    if cache_path.exists():
        with np.load(cache_path, allow_pickle=False) as data:
            done = int(data["done"])
            struct[:done], comp[:done], ok[:done] = data["structure"][:done], data["composition"][:done], data["ok"][:done]
    cache = FingerprintCache()
    began = time.perf_counter()
    for start in range(done, n, chunk):
        part = fingerprint_structures(structures[start:start + chunk], cache)
        stop = start + len(part)
        struct[start:stop], comp[start:stop], ok[start:stop] = part.structure, part.composition, part.ok
        tmp = cache_path.with_name(cache_path.name + ".tmp.npz")
        np.savez(tmp, done=np.array(stop), structure=struct, composition=comp, ok=ok)
        tmp.replace(cache_path)
        logger.info("reference fingerprints: %d / %d (%.0f s)", stop, n, time.perf_counter() - began)
        if progress is not None:
            progress(stop, n)
    return np.array(ids), Fingerprints(struct, comp, ok)


def training_composition_scaler(max_compositions: int = 4000, seed: int = 0, folder: Path | None = None
                                ) -> CompositionScaler:
    """Magpie scaler fitted on up to ``max_compositions`` formulas drawn from the shipped structure
    index (every training crystal's reduced formula, mostly Materials Project), a stand-in for
    CDVAE's fixed scaler (fitted on its Materials Project data)."""
    from app.engine.core.paths import cache_dir, models_dir
    from app.engine.core.registry import verified_weights_path

    index_path, _ = verified_weights_path("structure_index", folder or models_dir())
    with np.load(index_path, allow_pickle=False) as data:
        formulas = sorted(str(f) for f in data["formulas"])
    rng = np.random.default_rng(seed)
    chosen = [formulas[i] for i in rng.permutation(len(formulas))[:max_compositions]]
    digest = hashlib.sha1("\n".join(chosen).encode()).hexdigest()[:16]
    cache_path = cache_dir() / f"coverage_scaler.{digest}.npz"
    if cache_path.exists():
        with np.load(cache_path, allow_pickle=False) as data:
            return CompositionScaler(data["mean"], data["std"])
    scaler = fit_composition_scaler(chosen)
    np.savez(cache_path, mean=scaler.mean, std=scaler.std)
    return scaler
