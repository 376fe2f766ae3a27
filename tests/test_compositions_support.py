"""Tiny random-weight DING models for tests (imported by the composition tests; holds no tests itself)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

TINY_LAYERS = [(8, 0.0), (8, 0.5)]
KNOWN = {"NaCl": (-2.0, -3.5, 23.0), "Al2O3": (-3.4, -7.5, 8.5), "FeO": (-1.4, -7.0, 10.0), "KBr": (-1.9, -3.2, 35.0)}


def write_tiny_ding_models(folder: Path, decoded: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Random-weight DING predictors and CVAE, a known-composition summary and one prototype (rock salt).

    The CVAE's output biases are set so that, whatever the latent vector, it decodes ``decoded``
    (default ``{"Na": 1, "Cl": 1}``): tests of flags and counts then know what to expect.
    """
    import torch

    from app.engine.compositions.formula import ELEMENT_INDEX, VOCABULARY
    from app.engine.compositions.networks import PROPERTIES, CompositionCVAE, PropertyDNN
    from app.engine.compositions.runtime import (CVAE_NAME, KNOWN_COMPOSITIONS_FILE, KNOWN_NAME, PREDICTOR_NAMES,
                                                KnownCompositions)
    from app.engine.compositions.structures import PROTOTYPES_NAME
    from app.engine.core.registry import save_manifest_entry, sha256_of

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocabulary = list(VOCABULARY)
    for prop, name in PREDICTOR_NAMES.items():
        model = PropertyDNN(layers=TINY_LAYERS)
        path = folder / f"{name}.pt"
        torch.save(model.state_dict(), path)
        save_manifest_entry(name, {"file": path.name, "sha256": sha256_of(path), "kind": "ding_predictor",
                                   "architecture": {"property": prop, "vocabulary": vocabulary, "max_count": 10,
                                                    "layers": [list(layer) for layer in TINY_LAYERS]},
                                   "created": "test"}, folder)
    cvae = CompositionCVAE(hidden=(8,), latent_dim=4)
    with torch.no_grad():
        cvae.decoder[-1].weight.mul_(0.01)
        bias = torch.full((len(VOCABULARY), 11), -5.0)
        bias[:, 0] = 5.0
        for element, count in (decoded or {"Na": 1, "Cl": 1}).items():
            bias[ELEMENT_INDEX[element], 0], bias[ELEMENT_INDEX[element], count] = -5.0, 5.0
        cvae.decoder[-1].bias.copy_(bias.flatten())
    path = folder / f"{CVAE_NAME}.pt"
    torch.save(cvae.state_dict(), path)
    save_manifest_entry(CVAE_NAME, {"file": path.name, "sha256": sha256_of(path), "kind": "ding_cvae",
                                    "architecture": {"vocabulary": vocabulary, "max_count": 10, "hidden": [8],
                                                     "latent_dim": 4, "conditions": list(PROPERTIES)},
                                    "created": "test"}, folder)
    values = np.array(list(KNOWN.values()))
    known = KnownCompositions.from_formulas(list(KNOWN), weights=[1.0], means=values.mean(0)[None],
                                            covariances=np.diag(values.var(0) + 1e-3)[None],
                                            low=values.min(0), high=values.max(0))
    path = folder / KNOWN_COMPOSITIONS_FILE
    known.save(path)
    save_manifest_entry(KNOWN_NAME, {"file": path.name, "sha256": sha256_of(path), "kind": "composition_summary",
                                     "created": "test"}, folder)
    rock_salt = {"id": "mp-22862", "formula": "NaCl", "anonymous": "AB", "space_group": ["Fm-3m", 225],
                 "formation_energy_per_atom": -2.1,
                 "lattice": [[0.0, 2.82, 2.82], [2.82, 0.0, 2.82], [2.82, 2.82, 0.0]],
                 "species": ["Na", "Cl"], "frac_coords": [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]}
    path = folder / "ding_prototypes.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump([rock_salt], handle)
    save_manifest_entry(PROTOTYPES_NAME, {"file": path.name, "sha256": sha256_of(path),
                                          "kind": "structure_prototypes", "created": "test"}, folder)
    return folder
