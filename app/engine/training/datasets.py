"""Readers for the DFT-labelled training sets in the shared data folder.

Every reader yields :class:`LabelledCrystal` records: a material id, the source set, the crystal
as a CIF string or a pymatgen ``Structure`` dict, and its labels (NaN where a set has none).
Label vintages are kept apart by the ``source`` field.
"""

from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import io
import json
import logging
import math
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

logger = logging.getLogger(__name__)

#: Elastic moduli outside (0, MAX_PHYSICAL_MODULUS_GPA) are unphysical DFT artefacts and dropped.
MAX_PHYSICAL_MODULUS_GPA = 1000.0


@dataclass
class LabelledCrystal:
    """One training crystal.

    ``crystal`` is either a CIF string or a ``Structure.as_dict()`` dict (see ``kind``).
    """

    material_id: str
    source: str
    crystal: object
    kind: str  # "cif" | "dict" | "optimade"
    labels: dict[str, float] = field(default_factory=dict)


def shared_data_dir() -> Path:
    """Folder of the shared training data (``CRYSTAL_DESIGNER_DATA`` or ``../shared/data``)."""
    env = os.environ.get("CRYSTAL_DESIGNER_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def is_validation(material_id: str, fraction_percent: int = 10) -> bool:
    """Deterministic validation split by a hash of the material id (≈ ``fraction_percent`` %)."""
    digest = hashlib.sha256(material_id.encode()).digest()
    return int.from_bytes(digest[:4], "little") % 100 < fraction_percent


def _float(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def _read_tar_cifs(path: Path) -> dict[str, str]:
    cifs = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".cif"):
                cifs[Path(member.name).stem] = tar.extractfile(member).read().decode()
    return cifs


def read_mp_eform_gap(root: Path) -> Iterator[LabelledCrystal]:
    """Materials Project (legacy) formation energies and band gaps, P1 CIFs."""
    folder = root / "structures" / "mp_eform_gap"
    cifs = _read_tar_cifs(folder / "cifs.tar.gz")
    with gzip.open(folder / "properties.csv.gz", "rt") as handle:
        for row in csv.DictReader(handle):
            cif = cifs.get(row["mp_id"])
            if cif is None:
                continue
            yield LabelledCrystal(
                row["mp_id"],
                "mp_eform_gap",
                cif,
                "cif",
                {
                    "formation_energy_per_atom": _float(row["formation_energy_per_atom"]),
                    "band_gap": _float(row["band_gap"]),
                },
            )


def _elastic_labels(bulk: float, shear: float, poisson: float | None = None) -> dict[str, float] | None:
    if not (0 < bulk < MAX_PHYSICAL_MODULUS_GPA and 0 < shear < MAX_PHYSICAL_MODULUS_GPA):
        return None
    if poisson is None or not math.isfinite(poisson):
        poisson = (3 * bulk - 2 * shear) / (6 * bulk + 2 * shear)
    if not -1.0 < poisson < 0.5:
        return None
    return {
        "log10_bulk_modulus": math.log10(bulk),
        "log10_shear_modulus": math.log10(shear),
        "poisson_ratio": poisson,
    }


def read_elastic(root: Path) -> Iterator[LabelledCrystal]:
    """Elastic moduli: the CGCNN-era MP set and the MP 2025 binaries.

    Rows with non-positive or > 1000 GPa moduli, or a Poisson ratio outside (-1, 0.5), are
    dropped. Where an id is in both sets the 2025 label is kept (newer calculation settings).
    """
    seen: set[str] = set()
    dropped = 0
    with gzip.open(root / "structures" / "mp_binary_elastic_2025" / "entries.json.gz", "rt") as handle:
        entries = json.load(handle)
    for entry in entries:
        labels = _elastic_labels(_float(entry.get("bulk_modulus_vrh")), _float(entry.get("shear_modulus_vrh")))
        if labels is None:
            dropped += 1
            continue
        seen.add(entry["mp_id"])
        yield LabelledCrystal(entry["mp_id"], "mp_binary_elastic_2025", entry["structure"], "dict", labels)
    folder = root / "structures" / "mp_elastic"
    cifs = _read_tar_cifs(folder / "cifs.tar.gz")
    with gzip.open(folder / "properties.csv.gz", "rt") as handle:
        for row in csv.DictReader(handle):
            if row["mp_id"] in seen or row["mp_id"] not in cifs:
                continue
            labels = _elastic_labels(
                _float(row["K_VRH_GPa"]), _float(row["G_VRH_GPa"]), _float(row["poisson_ratio"])
            )
            if labels is None:
                dropped += 1
                continue
            yield LabelledCrystal(row["mp_id"], "mp_elastic", cifs[row["mp_id"]], "cif", labels)
    logger.info("elastic sets: dropped %d unphysical rows", dropped)


def read_optical(root: Path) -> Iterator[LabelledCrystal]:
    """Refractive index (Naccarato 2019, mean of the diagonal; Petousis 2017) and ε∞ (Petousis).

    Petousis' ``poly_electronic`` is the electronic dielectric constant ε∞; its ``n`` column is
    √ε∞. Where an id is in both sets the Petousis record is kept (it has both labels).
    """
    seen: set[str] = set()
    path = root / "structures" / "dielectric_petousis2017" / "dielectric_constant.csv.gz"
    with gzip.open(path, "rt") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    for row in csv.DictReader(io.StringIO("".join(lines))):
        meta = ast.literal_eval(row["meta"])
        material_id = str(meta.get("material_id"))
        cif = meta.get("cif") or meta.get("structure")
        n, eps = _float(row["n"]), _float(row["poly_electronic"])
        if not isinstance(cif, str) or not (n > 0 and eps > 0):
            continue
        seen.add(material_id)
        yield LabelledCrystal(
            material_id,
            "dielectric_petousis2017",
            cif,
            "cif",
            {"refractive_index": n, "log10_dielectric_constant": math.log10(eps)},
        )
    folder = root / "structures" / "refractive_naccarato2019"
    index: dict[str, float] = {}
    with gzip.open(folder / "db.csv.gz", "rt") as handle:
        for row in csv.DictReader(handle):
            values = [_float(row[f"Ref_index ({i})"]) for i in (1, 2, 3)]
            if all(v > 0 for v in values):
                index[row["MP_id"]] = sum(values) / 3
    with gzip.open(folder / "structures.jsonl.gz", "rt") as handle:
        for line in handle:
            record = json.loads(line)
            attributes = record["attributes"]
            material_id = attributes.get("immutable_id") or record["id"].rsplit("/", 1)[-1]
            if material_id in seen or material_id not in index:
                continue
            yield LabelledCrystal(
                material_id,
                "refractive_naccarato2019",
                attributes,
                "optimade",
                {"refractive_index": index[material_id], "log10_dielectric_constant": math.nan},
            )


def to_structure(record: LabelledCrystal):
    """Turn a record's crystal into an ordered pymatgen ``Structure``."""
    from pymatgen.core import Lattice, Structure

    if record.kind == "cif":
        return Structure.from_str(record.crystal, fmt="cif")
    if record.kind == "dict":
        return Structure.from_dict(record.crystal)
    if record.kind == "optimade":
        attributes = record.crystal
        return Structure(
            Lattice(attributes["lattice_vectors"]),
            attributes["species_at_sites"],
            attributes["cartesian_site_positions"],
            coords_are_cartesian=True,
        )
    raise ValueError(f"unknown crystal kind {record.kind!r}")


READERS = {
    "mp_eform_gap": read_mp_eform_gap,
    "elastic": read_elastic,
    "optical": read_optical,
}
