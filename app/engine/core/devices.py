"""Choosing the torch device inference runs on."""

from __future__ import annotations

import logging

from app.engine.core.errors import ModelError

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def select_device(preference: str = "auto"):
    """The torch device for ``preference``: ``auto`` picks CUDA, then Apple MPS, then CPU.

    Raises
    ------
    ModelError
        When an explicitly requested accelerator is not available on this machine.
    """
    import torch

    preference = (preference or "auto").lower()
    if preference not in DEVICE_CHOICES:
        raise ModelError(f"Unknown device '{preference}'; choose one of {', '.join(DEVICE_CHOICES)}.")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if preference == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if preference == "cuda" and not cuda:
        raise ModelError("CUDA was requested but no CUDA GPU (or CUDA build of torch) is available.")
    if preference == "mps" and not mps:
        raise ModelError("MPS was requested but Apple's Metal backend is not available.")
    return torch.device(preference)
