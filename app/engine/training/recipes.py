"""Training recipes of the shipped property models (kept free of torch so the CLI starts fast)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Recipe:
    """How one shipped property model is trained."""

    dataset: str
    targets: list[str]
    description: str
    units: dict[str, str]
    sources: list[str]
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    init_from: str | None = None
    architecture: dict = field(default_factory=dict)


_MP_CITE = "Materials Project (Jain et al., APL Mater. 1, 011002, 2013), CC-BY-4.0"

RECIPES: dict[str, Recipe] = {
    "formation_energy": Recipe(
        dataset="mp_eform_gap",
        targets=["formation_energy_per_atom"],
        description="Formation energy per atom from the crystal graph.",
        units={"formation_energy_per_atom": "eV/atom"},
        sources=[f"mp_eform_gap: legacy MP formation energies (~2018) via the MEGNet/CGCNN set; {_MP_CITE}"],
        epochs=50,
        batch_size=64,
        learning_rate=2e-3,
        architecture={"n_conv": 4, "n_hidden": 2},
    ),
    "band_gap": Recipe(
        dataset="mp_eform_gap",
        targets=["band_gap"],
        description="PBE band gap; conv layers start from the formation-energy model.",
        units={"band_gap": "eV"},
        sources=[f"mp_eform_gap: legacy MP PBE band gaps (~2018); {_MP_CITE}"],
        epochs=30,
        learning_rate=2e-3,
        init_from="formation_energy",
        architecture={"n_conv": 4, "n_hidden": 2},
    ),
    "elastic": Recipe(
        dataset="elastic",
        targets=["log10_bulk_modulus", "log10_shear_modulus", "poisson_ratio"],
        description="Voigt-Reuss-Hill bulk and shear moduli (log10 GPa) and Poisson ratio.",
        units={"log10_bulk_modulus": "log10(GPa)", "log10_shear_modulus": "log10(GPa)", "poisson_ratio": "1"},
        sources=[
            f"mp_elastic: de Jong et al., Sci. Data 2, 150009 (2015), as used by CGCNN; {_MP_CITE}",
            "mp_binary_elastic_2025: MP 2025 PBE binaries (matcalc benchmark), BSD-3",
        ],
        epochs=60,
        batch_size=32,
        init_from="formation_energy",
        architecture={"n_conv": 4, "n_hidden": 2},
    ),
    "optical": Recipe(
        dataset="optical",
        targets=["refractive_index"],
        description="Refractive index n (mean of the diagonal); ε∞ is reported as n².",
        units={"refractive_index": "1"},
        sources=[
            "refractive_naccarato2019: Naccarato et al., Phys. Rev. Mater. 3, 044602 (2019), MIT",
            "dielectric_petousis2017: Petousis et al., Sci. Data 4, 160134 (2017)",
        ],
        epochs=60,
        batch_size=32,
        init_from="formation_energy",
        architecture={"n_conv": 4, "n_hidden": 2},
    ),
}

RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)
