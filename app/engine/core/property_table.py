"""The eight predicted properties: keys, names, units and how each is obtained."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PropertySpec:
    """One predicted property.

    Attributes
    ----------
    key : str
        Key in prediction records, CSV columns and JSON.
    label : str
        Name shown to users.
    unit : str
        Unit string ("" for dimensionless).
    origin : str
        Which model output it comes from and how, for the record.
    """

    key: str
    label: str
    unit: str
    origin: str


PROPERTIES: tuple[PropertySpec, ...] = (
    PropertySpec("formation_energy_per_atom", "Formation energy", "eV/atom", "formation_energy model"),
    PropertySpec(
        "energy_per_atom", "Energy per atom", "eV/atom",
        "formation energy + composition-weighted PBE elemental reference energies",
    ),
    PropertySpec("band_gap", "Band gap", "eV", "band_gap model, clipped at 0"),
    PropertySpec("bulk_modulus", "Bulk modulus", "GPa", "elastic model, 10**log10 K_VRH"),
    PropertySpec("shear_modulus", "Shear modulus", "GPa", "elastic model, 10**log10 G_VRH"),
    PropertySpec("poisson_ratio", "Poisson ratio", "", "elastic model"),
    PropertySpec("refractive_index", "Refractive index", "", "optical model; undefined for metals"),
    PropertySpec("dielectric_constant", "Dielectric constant ε∞", "", "n² from the optical model; undefined for metals"),
)

PROPERTY_KEYS: tuple[str, ...] = tuple(p.key for p in PROPERTIES)
PROPERTY_BY_KEY: dict[str, PropertySpec] = {p.key: p for p in PROPERTIES}

#: Predicted gaps below this (eV) count as metallic: band gap 0, n and ε∞ undefined (ICSG3D rule).
METALLIC_GAP_THRESHOLD_EV = 0.1
