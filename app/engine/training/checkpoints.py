"""Per-epoch training checkpoints, so an interrupted CPU training run resumes where it stopped.

Checkpoints are the project's own files in the cache folder (never shipped); they hold the
optimizer and scheduler state and the run's history besides the weights.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from app.engine.core.paths import cache_dir

logger = logging.getLogger(__name__)


def checkpoint_path(name: str) -> Path:
    """Checkpoint file of training run ``name``."""
    folder = cache_dir() / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.pt"


def new_run_state() -> dict:
    """Progress of a run: epochs done, per-epoch history, best validation epoch so far."""
    return {"epoch": 0, "history": [], "best": {"score": math.inf, "state": None, "epoch": 0}}


def resume(name: str, config: dict, epochs: int, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer and scheduler from the checkpoint of an identical run.

    Returns the run state to continue from, or a new one when there is no checkpoint or it
    belongs to a run with another architecture or epoch count.
    """
    path = checkpoint_path(name)
    if not path.exists():
        return new_run_state()
    # Own cache file with Python containers (history, best state): not a shipped weight file.
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved.get("config") != config or saved.get("epochs") != epochs or "state" not in saved:
        logger.info("%s: checkpoint is from a different run; starting afresh", name)
        return new_run_state()
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    logger.info("%s: resuming after epoch %d", name, saved["state"]["epoch"])
    return saved["state"]


def record_epoch(state: dict, epoch: int, score: float, model, entry: dict) -> None:
    """Add an epoch to the run state and keep the weights if ``score`` (lower is better) is the best."""
    if score < state["best"]["score"]:
        state["best"] = {"score": score, "state": {k: v.clone() for k, v in model.state_dict().items()},
                         "epoch": epoch}
    state["history"].append({"epoch": epoch, **entry})
    state["epoch"] = epoch


def save(name: str, config: dict, epochs: int, model, optimizer, scheduler, state: dict) -> None:
    """Write the checkpoint of the run after an epoch."""
    torch.save({"config": config, "epochs": epochs, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "state": state}, checkpoint_path(name))


def load_shipped_weights(name: str, model, folder: Path | None = None) -> dict:
    """Load the shipped weights of ``name`` into ``model`` to continue training; returns its entry.

    The shipped architecture (without its data-derived decile edges) must equal
    ``model.config.to_dict()``; otherwise a ValueError says to train afresh.
    """
    from app.engine.core.registry import load_state_dict

    state, entry = load_state_dict(name, folder)
    architecture = {k: v for k, v in entry["architecture"].items() if k != "decile_edges_eV_per_atom"}
    if architecture != model.config.to_dict():
        raise ValueError(f"The shipped {name} has another architecture; train it afresh instead.")
    model.load_state_dict(state)
    return entry
