"""The model manifest: which weight files ship, what they are, and loading them safely.

``models/manifest.json`` maps each model name to an entry::

    {"file": "formation_energy.pt", "sha256": "...", "kind": "cgcnn",
     "architecture": {...}, "targets": {...units, transforms...}, "data": {...},
     "split": {...}, "epochs": 80, "metrics": {...}, "card": "formation_energy.md"}

Weights are refused when their sha256 differs from the manifest and are loaded with
``torch.load(..., weights_only=True)``, so a weight file can never run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

from app.engine.core.errors import ModelError
from app.engine.core.paths import models_dir

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(folder: Path | None = None) -> dict[str, dict]:
    """Manifest entries by model name (empty when no manifest exists)."""
    path = (folder or models_dir()) / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())["models"]
    except (OSError, ValueError, KeyError) as error:
        raise ModelError(f"The model manifest {path} cannot be read: {error}") from error


def save_manifest_entry(name: str, entry: dict, folder: Path | None = None) -> None:
    """Add or replace one model's entry in the manifest."""
    folder = folder or models_dir()
    path = folder / MANIFEST_NAME
    models = load_manifest(folder) if path.exists() else {}
    models[name] = entry
    path.write_text(json.dumps({"models": dict(sorted(models.items()))}, indent=2) + "\n")


def verified_weights_path(name: str, folder: Path | None = None) -> tuple[Path, dict]:
    """Path of model ``name``'s weights after checking them against the manifest."""
    folder = folder or models_dir()
    entries = load_manifest(folder)
    if name not in entries:
        raise ModelError(f"Model '{name}' is not in the manifest of {folder}.")
    entry = entries[name]
    path = folder / entry["file"]
    if not path.exists():
        raise ModelError(f"Weights of model '{name}' are missing: {path}.")
    actual = sha256_of(path)
    if actual != entry["sha256"]:
        raise ModelError(
            f"Weights of model '{name}' ({path.name}) do not match the manifest "
            f"(sha256 {actual[:12]}… instead of {entry['sha256'][:12]}…); refusing to load them."
        )
    return path, entry


def load_state_dict(name: str, folder: Path | None = None):
    """Verified state dict and manifest entry of model ``name`` (on the CPU)."""
    import torch

    path, entry = verified_weights_path(name, folder)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state, entry


# --- building models from their entries ---------------------------------------------------------

#: ``{manifest kind: build(entry) -> torch.nn.Module}``, filled by the modules that define the
#: networks (``register_model_kind``), because this ground layer cannot import them.
_BUILDERS: dict[str, Callable[[dict], object]] = {}
def register_model_kind(kind: str, build: Callable[[dict], object]) -> None:
    """Let :func:`load_model` build manifest entries of ``kind``.

    Parameters
    ----------
    kind : str
        The entry's ``kind`` (``cgcnn``, ``density_vae`` …).
    build : callable
        ``build(entry) -> torch.nn.Module`` with random weights, from the entry's
        ``architecture`` (TypeError or ValueError for arguments it does not know).
    """
    _BUILDERS[kind] = build


def _builder(name: str, entry: dict) -> Callable[[dict], object]:
    kind = entry.get("kind")
    if kind not in _BUILDERS:
        known = ", ".join(sorted(_BUILDERS)) or "none"
        raise ModelError(f"Model '{name}' is of kind '{kind}', which this version of Crystal Designer cannot "
                         f"build (it knows: {known}).")
    return _BUILDERS[kind]


def load_model(name: str, folder: Path | None = None, device="cpu"):
    """Build model ``name`` from its manifest entry and load its verified weights.

    The weights' sha256 is checked against the manifest and they are read with
    ``weights_only=True``; the network is built by the builder registered for the entry's kind
    (importing the network's module registers it: ``app.engine.properties.cgcnn`` …).

    Parameters
    ----------
    name : str
        Manifest name (``formation_energy``, ``density_vae`` …).
    folder : Path, optional
        Models folder (default: the shipped ``models/``).
    device : str or torch.device
        Where the model is moved (it is returned in ``eval`` mode).

    Returns
    -------
    (torch.nn.Module, dict)
        The model and its manifest entry.

    Raises
    ------
    ModelError
        Unknown model or kind, missing or altered weights, or weights of another architecture.
    """
    state, entry = load_state_dict(name, folder)
    build = _builder(name, entry)
    try:
        model = build(entry)
        model.load_state_dict(state)
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        # RuntimeError: torch's load_state_dict on weights of another architecture.
        raise ModelError(f"Model '{name}' does not match this version of Crystal Designer: {error}") from error
    return model.to(device).eval(), entry
