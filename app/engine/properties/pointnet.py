"""PointNet for crystal property regression (Okuno et al.; after Qi et al., CVPR 2017).

The crystal is a point cloud (:mod:`app.engine.properties.point_cloud`): one point per atom,
coordinates plus CGCNN element features. The network is the seed's: an input T-Net (a small
PointNet predicting a 3×3 transform applied to the coordinates), a shared per-point MLP, a
feature T-Net (a k×k transform of the per-point features), a second shared per-point MLP, a
global max-pool over the atoms and an MLP head with one output per target. The max-pool is
masked, so padding rows of a batch never reach it. By default a masked mean-pool is joined to the
max-pool (``pooling="max+mean"``): a maximum cannot count atoms, so with max alone the model could
not see the stoichiometry (``pooling="max"`` is the seed's network exactly). The pooled feature is joined by the cell
descriptor (lattice lengths, angle cosines, volume per atom) before the head.

Outputs are standardised per target; :meth:`PointNet.predict` returns physical units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from app.engine.core.registry import register_model_kind
from app.engine.properties.point_cloud import CELL_DESCRIPTOR_LENGTH, POINT_FEATURE_LENGTH, PointBatch

#: Coordinates are divided by this (Å) so they enter the network at the scale of the one-hot features.
COORDINATE_SCALE = 5.0


@dataclass
class PointNetConfig:
    """Architecture of one PointNet (stored in the manifest as ``architecture``)."""

    targets: list[str] = field(default_factory=lambda: ["formation_energy_per_atom"])
    input_widths: list[int] = field(default_factory=lambda: [64, 64])
    output_widths: list[int] = field(default_factory=lambda: [128, 256])
    tnet_widths: list[int] = field(default_factory=lambda: [64, 128])
    head_widths: list[int] = field(default_factory=lambda: [256, 128])
    #: "max" (the seed) or "max+mean": a max cannot count atoms, so the mean adds the stoichiometry.
    pooling: str = "max+mean"
    #: Add each atom's distance from the centroid (a rotation-invariant input) to its coordinates.
    radial_feature: bool = False
    #: Per-point columns read: POINT_FEATURE_LENGTH (the seed's coordinates + element features)
    #: or FULL_POINT_FEATURE_LENGTH (with the environment features of the point-cloud module).
    point_features: int = POINT_FEATURE_LENGTH
    cell_features: int = CELL_DESCRIPTOR_LENGTH

    def to_dict(self) -> dict:
        return asdict(self)


def _shared_mlp(widths: list[int]) -> nn.Sequential:
    """Per-point MLP (a Linear over the last axis of ``(batch, points, channels)``), ReLU after each layer."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


def masked_mean(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the points axis of ``features`` ``(B, N, C)`` over rows where ``mask`` ``(B, N)`` is True."""
    weights = mask.unsqueeze(-1).to(features.dtype)
    return (features * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def masked_max(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over the points axis of ``features`` ``(B, N, C)``, ignoring rows where ``mask`` ``(B, N)`` is False."""
    filled = features.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    return filled.amax(dim=1)


class TNet(nn.Module):
    """Predicts a ``k × k`` transform from a point set (initialised to the identity)."""

    def __init__(self, k: int, widths: list[int]):
        super().__init__()
        self.k = k
        self.points = _shared_mlp([k, *widths])
        self.head = nn.Sequential(nn.Linear(widths[-1], widths[-1] // 2), nn.ReLU(), nn.Linear(widths[-1] // 2, k * k))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = masked_max(self.points(x), mask)
        delta = self.head(pooled).view(-1, self.k, self.k)
        return torch.eye(self.k, dtype=x.dtype, device=x.device) + delta


def cell_inputs(cell: torch.Tensor) -> torch.Tensor:
    """Network inputs from the cell descriptor: log lengths, cosines, log volume per atom."""
    return torch.cat([torch.log(cell[:, :3].clamp_min(1e-3)), cell[:, 3:6], torch.log(cell[:, 6:7].clamp_min(1e-3))], 1)


class PointNet(nn.Module):
    """The seed's PointNet regressor with a masked global max-pool."""

    def __init__(self, config: PointNetConfig):
        super().__init__()
        self.config = config
        n_targets = len(config.targets)
        self.input_tnet = TNet(3, config.tnet_widths)
        self.input_mlp = _shared_mlp([config.point_features + int(config.radial_feature), *config.input_widths])
        k = config.input_widths[-1]
        self.feature_tnet = TNet(k, config.tnet_widths)
        self.output_mlp = _shared_mlp([k, *config.output_widths])
        head: list[nn.Module] = []
        pools = 2 if config.pooling == "max+mean" else 1
        width = pools * config.output_widths[-1] + config.cell_features
        for hidden in config.head_widths:
            head += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        head.append(nn.Linear(width, n_targets))
        self.head = nn.Sequential(*head)
        self.register_buffer("target_mean", torch.zeros(n_targets))
        self.register_buffer("target_std", torch.ones(n_targets))
        self.last_feature_transform: torch.Tensor | None = None

    def forward(self, points: torch.Tensor, mask: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Standardised outputs, shape ``(B, n_targets)``.

        Parameters
        ----------
        points : torch.Tensor
            ``(B, N, ≥ point_features)``: x, y, z (Å), element features, environment features;
            columns beyond ``config.point_features`` are ignored; padding rows arbitrary.
        mask : torch.Tensor
            ``(B, N)`` bool, True for real atoms.
        cell : torch.Tensor
            ``(B, cell_features)`` cell descriptor.
        """
        xyz = points[..., :3] / COORDINATE_SCALE
        xyz = torch.bmm(xyz, self.input_tnet(xyz, mask))
        # A batch may carry more per-point columns (environment features) than this model reads.
        inputs = [xyz, points[..., 3:self.config.point_features]]
        if self.config.radial_feature:
            inputs.append(points[..., :3].norm(dim=-1, keepdim=True) / COORDINATE_SCALE)
        features = self.input_mlp(torch.cat(inputs, dim=-1))
        transform = self.feature_tnet(features, mask)
        self.last_feature_transform = transform
        features = self.output_mlp(torch.bmm(features, transform))
        pooled = masked_max(features, mask)
        if self.config.pooling == "max+mean":
            pooled = torch.cat([pooled, masked_mean(features, mask)], dim=1)
        return self.head(torch.cat([pooled, cell_inputs(cell)], dim=1))

    def forward_batch(self, batch: "TensorPointBatch") -> torch.Tensor:
        return self(batch.points, batch.mask, batch.cell)

    def predict(self, batch: "TensorPointBatch") -> torch.Tensor:
        """Outputs in physical units, shape ``(B, n_targets)``."""
        return self.forward_batch(batch) * self.target_std + self.target_mean


def feature_transform_penalty(transform: torch.Tensor) -> torch.Tensor:
    """PointNet's regulariser ‖I − A Aᵀ‖² keeping the feature transform close to orthogonal."""
    identity = torch.eye(transform.shape[-1], dtype=transform.dtype, device=transform.device)
    return ((identity - transform @ transform.transpose(1, 2)) ** 2).sum(dim=(1, 2)).mean()


@dataclass
class TensorPointBatch:
    """A :class:`PointBatch` as tensors on one device."""

    points: torch.Tensor
    mask: torch.Tensor
    cell: torch.Tensor


def batch_to_tensors(batch: PointBatch, device: str | torch.device = "cpu") -> TensorPointBatch:
    """Move a numpy :class:`PointBatch` to ``device``."""
    return TensorPointBatch(
        torch.from_numpy(np.ascontiguousarray(batch.points)).to(device),
        torch.from_numpy(batch.mask).to(device),
        torch.from_numpy(np.ascontiguousarray(batch.cell)).to(device),
    )


register_model_kind("pointnet", lambda entry: PointNet(PointNetConfig(**entry["architecture"])))
