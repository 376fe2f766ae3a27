"""The DING networks (Pathak et al. 2020) in PyTorch.

- :class:`PropertyDNN`: the predictor of Table 1, an 8-layer dense network with dropout after
  layers 2, 3 and 4, one per property, on the one-hot count feature vector.
- :class:`CompositionCVAE`: the generator of Table 2, a conditional VAE whose encoder and decoder
  both receive the three properties appended to their input; its decoder ends in a softmax over
  each element's count block.

Both keep their normalisation (target mean/std, condition mean/std) as buffers, so a state dict
is the whole model.
"""

from __future__ import annotations

import torch
from torch import nn

from app.engine.compositions.formula import BLOCK, FEATURE_LENGTH, VOCABULARY

#: (units, dropout after the layer) of the predictor's hidden layers, Table 1 of the paper.
PREDICTOR_LAYERS = ((1024, 0.0), (1024, 0.7), (1024, 0.7), (512, 0.5), (128, 0.0), (64, 0.0), (32, 0.0))
#: Encoder widths of Table 2 (the decoder mirrors them).
CVAE_HIDDEN = (512, 256, 128)
CVAE_LATENT = 32
#: The three properties, in the order of the CVAE's condition vector.
PROPERTIES = ("formation_enthalpy", "energy_per_atom", "volume_per_atom")
UNITS = {"formation_enthalpy": "eV/atom", "energy_per_atom": "eV/atom", "volume_per_atom": "Å³/atom"}


class PropertyDNN(nn.Module):
    """One property from the composition's feature vector.

    Parameters
    ----------
    n_features : int
        Length of the feature vector (``FEATURE_LENGTH``).
    layers : sequence of (int, float)
        Width and following dropout rate of each hidden layer (default: the paper's Table 1).
    """

    def __init__(self, n_features: int = FEATURE_LENGTH, layers=PREDICTOR_LAYERS):
        super().__init__()
        modules: list[nn.Module] = []
        width_in = n_features
        for width, dropout in layers:
            modules += [nn.Linear(width_in, width), nn.ReLU()]
            if dropout > 0:
                modules.append(nn.Dropout(dropout))
            width_in = width
        modules.append(nn.Linear(width_in, 1))
        self.net = nn.Sequential(*modules)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised prediction, shape ``(n,)``, from features ``(n, n_features)``."""
        return self.net(features).squeeze(-1)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Prediction in the property's units, shape ``(n,)``."""
        return self.forward(features) * self.target_std + self.target_mean


class CompositionCVAE(nn.Module):
    """Conditional VAE over one-hot count blocks, conditioned on the three properties.

    Parameters
    ----------
    n_elements, block : int
        Vocabulary size and count classes per element (the feature vector has ``n_elements * block``).
    hidden : sequence of int
        Encoder widths (the decoder uses them reversed), Table 2: 512, 256, 128.
    latent_dim : int
        Size of the latent space (32).
    n_conditions : int
        Properties appended to encoder and decoder inputs (3).
    """

    def __init__(self, n_elements: int = len(VOCABULARY), block: int = BLOCK, hidden=CVAE_HIDDEN,
                 latent_dim: int = CVAE_LATENT, n_conditions: int = len(PROPERTIES)):
        super().__init__()
        self.n_elements, self.block, self.latent_dim = n_elements, block, latent_dim
        n_features = n_elements * block
        encoder: list[nn.Module] = []
        width_in = n_features + n_conditions
        for width in hidden:
            encoder += [nn.Linear(width_in, width), nn.ReLU()]
            width_in = width
        self.encoder = nn.Sequential(*encoder)
        self.to_mean = nn.Linear(width_in, latent_dim)
        self.to_log_var = nn.Linear(width_in, latent_dim)
        decoder: list[nn.Module] = []
        width_in = latent_dim + n_conditions
        for width in reversed(tuple(hidden)):
            decoder += [nn.Linear(width_in, width), nn.ReLU()]
            width_in = width
        decoder.append(nn.Linear(width_in, n_features))
        self.decoder = nn.Sequential(*decoder)
        self.register_buffer("condition_mean", torch.zeros(n_conditions))
        self.register_buffer("condition_std", torch.ones(n_conditions))

    def standardise(self, conditions: torch.Tensor) -> torch.Tensor:
        """Properties in their units ``(n, n_conditions)`` → the standardised condition vector."""
        return (conditions - self.condition_mean) / self.condition_std

    def encode(self, features: torch.Tensor, conditions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance ``(n, latent_dim)`` of features with their properties (units)."""
        hidden = self.encoder(torch.cat([features, self.standardise(conditions)], dim=1))
        return self.to_mean(hidden), self.to_log_var(hidden)

    def decode_logits(self, latent: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """Count-class logits ``(n, n_elements, block)``; the softmax over the last axis is the output."""
        logits = self.decoder(torch.cat([latent, self.standardise(conditions)], dim=1))
        return logits.view(-1, self.n_elements, self.block)

    def forward(self, features: torch.Tensor, conditions: torch.Tensor):
        """Logits, latent mean and log-variance for a training step (reparameterised sample)."""
        mean, log_var = self.encode(features, conditions)
        latent = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        return self.decode_logits(latent, conditions), mean, log_var

    def decode_counts(self, latent: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """Most likely count of every element, ``(n, n_elements)`` int64."""
        return self.decode_logits(latent, conditions).argmax(dim=-1)
