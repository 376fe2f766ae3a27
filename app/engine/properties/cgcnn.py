"""Crystal graph convolutional neural network (Xie & Grossman, PRL 120, 145301, 2018).

The gated convolution updates each atom from its neighbours::

    v_i <- g(v_i + BN(sum_j sigmoid(z_ij W_f + b_f) * g(z_ij W_s + b_s))),   z_ij = v_i | v_j | u_ij

where ``u_ij`` is the Gaussian expansion of the distance and ``g`` is softplus. The product
``z_ij W`` is split into ``v_i W_self + v_j W_nbr + u_ij W_edge`` so the two atom terms are
computed once per atom rather than once per edge (the same function, ~3x less work on CPU).
Atom vectors are mean-pooled per crystal and an MLP head predicts one or more targets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from app.engine.core.elements import FEATURE_LENGTH, element_feature_table
from app.engine.core.registry import register_model_kind
from app.engine.properties.graph import DEFAULT_CUTOFF, GraphBatch


@dataclass
class CGCNNConfig:
    """Architecture arguments; stored in the model manifest.

    Attributes
    ----------
    targets : list of str
        Names of the predicted quantities, in output order.
    atom_dim : int
        Width of the atom vectors.
    hidden_dim : int
        Width of the MLP head.
    n_conv : int
        Number of gated convolutions.
    n_hidden : int
        Number of hidden layers in the head.
    cutoff, gaussian_step : float
        Range and spacing (Å) of the Gaussian distance expansion.
    """

    targets: list[str] = field(default_factory=lambda: ["formation_energy_per_atom"])
    atom_dim: int = 64
    hidden_dim: int = 128
    n_conv: int = 3
    n_hidden: int = 1
    cutoff: float = DEFAULT_CUTOFF
    gaussian_step: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


class GatedConvolution(nn.Module):
    """One CGCNN gated graph convolution."""

    def __init__(self, atom_dim: int, edge_dim: int):
        super().__init__()
        self.self_linear = nn.Linear(atom_dim, 2 * atom_dim)
        self.neighbor_linear = nn.Linear(atom_dim, 2 * atom_dim, bias=False)
        self.edge_linear = nn.Linear(edge_dim, 2 * atom_dim, bias=False)
        self.edge_norm = nn.BatchNorm1d(2 * atom_dim)
        self.atom_norm = nn.BatchNorm1d(atom_dim)

    def forward(
        self, atoms: torch.Tensor, neighbor_index: torch.Tensor, edges: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """New atom vectors; ``mask`` None means every neighbour slot is a real neighbour."""
        n_atoms, n_neighbors = neighbor_index.shape
        if self.training:
            z = (
                self.self_linear(atoms)[:, None, :]
                + self.neighbor_linear(atoms)[neighbor_index]
                + self.edge_linear(edges)
            )
            z = self.edge_norm(z.reshape(n_atoms * n_neighbors, -1)).reshape(n_atoms, n_neighbors, -1)
            gate, core = z.chunk(2, dim=-1)
            messages = torch.sigmoid(gate) * F.softplus(core)
        else:
            z = self._folded_edge_terms(atoms, neighbor_index, edges)
            gate, core = z.chunk(2, dim=-1)
            messages = gate.sigmoid_().mul_(F.softplus(core))  # z is this call's own: no copies
        if mask is not None:
            messages = messages * mask[..., None]
        return F.softplus(atoms + self.atom_norm(messages.sum(dim=1)))

    def _folded_edge_terms(self, atoms: torch.Tensor, neighbor_index: torch.Tensor,
                           edges: torch.Tensor) -> torch.Tensor:
        """``edge_norm(z)`` in eval mode, with the norm's affine map folded into the three linear
        maps (same function; one pass over the edge tensor instead of four on CPU)."""
        norm = self.edge_norm
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        n_atoms, n_neighbors = neighbor_index.shape
        self_terms = F.linear(atoms, self.self_linear.weight * scale[:, None], self.self_linear.bias * scale + shift)
        neighbor_terms = F.linear(atoms, self.neighbor_linear.weight * scale[:, None])
        z = F.linear(edges, self.edge_linear.weight * scale[:, None]).reshape(n_atoms, n_neighbors, -1)
        # In-place adds on the contiguous edge tensor: broadcasting three-way adds was 40 % of the time.
        # The gather as an embedding look-up: the same rows, half the time of index_select in bfloat16.
        z += F.embedding(neighbor_index, neighbor_terms)
        z += self_terms[:, None, :]
        return z


class CGCNN(nn.Module):
    """CGCNN regressor for one or more targets.

    Targets are learnt in standardised form; ``target_mean`` and ``target_std`` (buffers, saved
    with the weights) map the outputs back to physical units.
    """

    def __init__(self, config: CGCNNConfig):
        super().__init__()
        self.config = config
        self.register_buffer("element_table", torch.from_numpy(element_feature_table()))
        centers = torch.arange(0.0, config.cutoff + 1e-6, config.gaussian_step)
        self.register_buffer("gaussian_centers", centers)
        self.embedding = nn.Linear(FEATURE_LENGTH, config.atom_dim)
        self.convolutions = nn.ModuleList(
            GatedConvolution(config.atom_dim, len(centers)) for _ in range(config.n_conv)
        )
        layers: list[nn.Module] = [nn.Linear(config.atom_dim, config.hidden_dim), nn.Softplus()]
        for _ in range(config.n_hidden - 1):
            layers += [nn.Linear(config.hidden_dim, config.hidden_dim), nn.Softplus()]
        self.head = nn.Sequential(*layers)
        self.output = nn.Linear(config.hidden_dim, len(config.targets))
        self.register_buffer("target_mean", torch.zeros(len(config.targets)))
        self.register_buffer("target_std", torch.ones(len(config.targets)))

    def expand_distances(self, distances: torch.Tensor) -> torch.Tensor:
        """Gaussian expansion, shape ``(..., n_centers)``."""
        step = self.config.gaussian_step
        return torch.exp(-((distances[..., None] - self.gaussian_centers) ** 2) / step**2)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Standardised predictions, shape ``(n_crystals, n_targets)``."""
        # "atom_features" (n_atoms, FEATURE_LENGTH), when given, replaces the element lookup:
        # occupancy-weighted features of disordered sites (virtual crystal, see properties.disorder).
        features = batch.get("atom_features")
        atoms = self.embedding(self.element_table[batch["atomic_numbers"]] if features is None else features)
        # Models with the same expansion share it when several run on one batch (the predictor).
        edge_key = f"gaussian_edges_{self.config.cutoff}_{self.config.gaussian_step}"
        edges = batch.get(edge_key)
        if edges is None or self.training:
            edges = self.expand_distances(batch["neighbor_distance"])
            if not self.training and not torch.is_grad_enabled():
                if torch.is_autocast_enabled("cpu"):  # cast once, not in each of the convolutions
                    edges = edges.to(torch.get_autocast_dtype("cpu"))
                batch[edge_key] = edges
        mask = batch["neighbor_mask"]
        # With an 8 Å cutoff nearly every atom has its 12 neighbours: skip multiplying by ones.
        mask = None if not self.training and bool(mask.all()) else mask.to(atoms.dtype)
        for convolution in self.convolutions:
            atoms = convolution(atoms, batch["neighbor_index"], edges, mask)
        # Pooling and the head run in float32 whatever the autocast: the output of a bfloat16 layer
        # has 8 significant bits, which snapped every prediction to steps of target_std/128
        # (0.009 eV/atom; different crystals got identical values). They cost little (one row
        # per crystal); the convolutions (one row per atom and neighbour) stay in bfloat16.
        with torch.autocast("cpu", enabled=False):
            atoms = atoms.float()
            crystal_index = batch["crystal_index"]
            n_crystals = int(batch["n_crystals"])
            summed = atoms.new_zeros(n_crystals, atoms.shape[1]).index_add_(0, crystal_index, atoms)
            counts = torch.bincount(crystal_index, minlength=n_crystals).clamp(min=1).to(atoms.dtype)
            pooled = summed / counts[:, None]
            return self.output(self.head(pooled))

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Predictions in physical (training) units (float32), shape ``(n_crystals, n_targets)``."""
        standardised = self(batch)
        with torch.autocast("cpu", enabled=False):
            return standardised.float() * self.target_std.float() + self.target_mean.float()


def batch_to_tensors(batch: GraphBatch, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Move a numpy :class:`GraphBatch` to torch tensors on ``device``."""
    return {
        "atomic_numbers": torch.from_numpy(batch.atomic_numbers).to(device),
        "neighbor_index": torch.from_numpy(np.ascontiguousarray(batch.neighbor_index)).to(device),
        "neighbor_distance": torch.from_numpy(batch.neighbor_distance).to(device),
        "neighbor_mask": torch.from_numpy(batch.neighbor_mask).to(device),
        "crystal_index": torch.from_numpy(batch.crystal_index).to(device),
        "n_crystals": torch.tensor(batch.n_crystals),
    }


register_model_kind("cgcnn", lambda entry: CGCNN(CGCNNConfig(**entry["architecture"])))
