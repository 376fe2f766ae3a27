"""Networks of the ICSG3D generator on 32³ voxel maps: the segmentation UNet and the
conditional deep-feature-consistent VAE (Court et al., JCIM 2020, Figure 1a-b, eq. 4-7).

The VAE here also has a species head, which labels decoded maps at generation time; the UNet
gives the VAE's perceptual loss during training (see the ``density_vae`` model card). Widths are
chosen for CPU training (see ``STACK.md``: a 16/32/64/128 UNet costs ~108 ms per
sample forward+backward at 32³ on two cores); the UNet is fully convolutional so it can be
trained on crops and applied to whole maps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from app.engine.core.registry import register_model_kind

N_CONDITIONS = 10  # formation-energy deciles


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


@dataclass
class UNetConfig:
    """Architecture of the segmentation UNet.

    ``species`` lists the atomic numbers of the vocabulary; class 0 is background, class k
    (k ≥ 1) is ``species[k - 1]``.
    """

    species: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    in_channels: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


class UNet3D(nn.Module):
    """3-D UNet: density map → species logits (background + vocabulary) and occupancy logit.

    Input shape ``(batch, in_channels, D, H, W)`` with D, H, W divisible by
    ``2 ** (len(widths) - 1)``. Returns ``(species_logits (batch, n_classes, D, H, W),
    mask_logits (batch, D, H, W))``.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        widths = config.widths
        self.down = nn.ModuleList()
        channels = config.in_channels
        for width in widths:
            self.down.append(_conv_block(channels, width))
            channels = width
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose3d(channels, width, 2, stride=2))
            self.up_blocks.append(_conv_block(2 * width, width))
            channels = width
        self.species_head = nn.Conv3d(channels, len(config.species) + 1, 1)
        self.mask_head = nn.Conv3d(channels, 1, 1)

    @property
    def n_classes(self) -> int:
        return len(self.config.species) + 1

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Hidden activations of the contracting path (the DFC-VAE's perceptual features)."""
        out = []
        for level, block in enumerate(self.down):
            if level:
                x = F.max_pool3d(x, 2)
            x = block(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = self.features(x)
        x = skips[-1]
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips[:-1])):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.species_head(x), self.mask_head(x)[:, 0]


@dataclass
class VAEConfig:
    """Architecture of the conditional VAE.

    ``channels`` maps are reconstructed (density + three coordinate channels); the encoder also
    reads ``species_feature_channels`` element descriptors per voxel
    (:func:`app.engine.generation.density.species_features`). ``species`` lists the atomic numbers of the
    species head's vocabulary: class 0 is background, class k (k ≥ 1) is ``species[k - 1]``.
    """

    channels: int = 4
    grid: int = 32
    latent_dim: int = 256
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    n_conditions: int = N_CONDITIONS
    species: list[int] = field(default_factory=list)
    species_feature_channels: int = 4
    species_head_width: int = 32

    @property
    def n_species_classes(self) -> int:
        return len(self.species) + 1

    def to_dict(self) -> dict:
        return asdict(self)


class ConditionalVAE3D(nn.Module):
    """Conditional VAE over voxel maps with a species head.

    Encoder input: density, three coordinate channels and the element descriptors of each
    voxel, plus the one-hot condition (formation-energy decile) tiled as extra channels
    (paper Figure 1a). Decoder: latent + condition → density and coordinate channels at G³,
    and species logits (background + vocabulary) at G/2 from the last hidden layer, one per
    2×2×2 block of voxels (:func:`upsample_species` brings them to G³ for segmentation;
    training compares them with each block's majority class, which costs a fraction of a
    full-resolution loss on the CPU). The species head replaces the paper's separate
    segmentation UNet at generation time (see the model card for why).
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels = config.channels + config.species_feature_channels + config.n_conditions
        for width in config.widths:
            layers += [nn.Conv3d(channels, width, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm3d(width), nn.LeakyReLU(0.2, inplace=True)]
            channels = width
        self.encoder = nn.Sequential(*layers)
        self.bottom = config.grid // 2 ** len(config.widths)
        flat = channels * self.bottom**3
        self.to_mu = nn.Linear(flat, config.latent_dim)
        self.to_logvar = nn.Linear(flat, config.latent_dim)
        self.from_latent = nn.Linear(config.latent_dim + config.n_conditions, flat)
        layers = []
        widths = list(reversed(config.widths))
        for width, next_width in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose3d(width, next_width, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm3d(next_width), nn.LeakyReLU(0.2, inplace=True)]
        self.decoder = nn.Sequential(*layers)
        self.map_head = nn.ConvTranspose3d(widths[-1], config.channels, 4, stride=2, padding=1)
        self.species_head = nn.Sequential(
            nn.Conv3d(widths[-1], config.species_head_width, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv3d(config.species_head_width, config.n_species_classes, 1),
        )

    def encode(self, maps: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder input (batch, channels + species features, G, G, G) and condition
        (batch, n_conditions) → μ, log σ² (batch, latent)."""
        tiled = condition[:, :, None, None, None].expand(-1, -1, *maps.shape[2:])
        hidden = self.encoder(torch.cat([maps, tiled], dim=1)).flatten(1)
        return self.to_mu(hidden), self.to_logvar(hidden)

    def _hidden(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        hidden = self.from_latent(torch.cat([z, condition], dim=1))
        hidden = hidden.view(len(z), self.config.widths[-1], self.bottom, self.bottom, self.bottom)
        return self.decoder(F.leaky_relu(hidden, 0.2))

    def decode(self, z: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent ``z`` (batch, latent) and condition (batch, n_conditions) → maps
        (batch, channels, G, G, G) and block species logits (batch, n_species_classes, G/2, G/2, G/2)."""
        hidden = self._hidden(z, condition)
        return self.map_head(hidden), self.species_head(hidden)

    def forward(self, maps: torch.Tensor, condition: torch.Tensor):
        """→ reconstructed maps, species logits, μ, log σ² (z sampled in training mode)."""
        mu, logvar = self.encode(maps, condition)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        recon, logits = self.decode(z, condition)
        return recon, logits, mu, logvar


def upsample_species(block_logits: torch.Tensor) -> torch.Tensor:
    """Block species logits (batch, classes, G/2, G/2, G/2) → voxel logits (batch, classes, G, G, G),
    trilinear, so region borders fall between voxels rather than on the block grid."""
    return F.interpolate(block_logits, scale_factor=2, mode="trilinear", align_corners=False)


def species_from_logits(logits: torch.Tensor, vocabulary: list[int]) -> torch.Tensor:
    """Atomic-number map (batch, D, H, W), int64, 0 = no atom, from species logits
    (batch, classes, D, H, W)."""
    table = torch.tensor([0] + list(vocabulary), device=logits.device)
    return table[logits.argmax(dim=1)]


def block_majority(classes: torch.Tensor) -> torch.Tensor:
    """Majority class of each 2×2×2 block (ties: the lowest-indexed voxel of the block).

    Parameters
    ----------
    classes : torch.Tensor
        Shape ``(batch, G, G, G)``, int64, G even.

    Returns
    -------
    torch.Tensor
        Shape ``(batch, G/2, G/2, G/2)``, int64.
    """
    b, g = classes.shape[0], classes.shape[1] // 2
    blocks = classes.view(b, g, 2, g, 2, g, 2).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, g, g, g, 8)
    votes = (blocks[..., :, None] == blocks[..., None, :]).sum(dim=-1)
    return blocks.gather(-1, votes.argmax(dim=-1, keepdim=True))[..., 0]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) ‖ N(0, I)) summed over latent dimensions, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def one_hot_condition(deciles: torch.Tensor, n_conditions: int = N_CONDITIONS) -> torch.Tensor:
    """Decile indices (batch,) → one-hot float (batch, n_conditions)."""
    return F.one_hot(deciles.long(), n_conditions).float()


def _vae_from_entry(entry: dict) -> ConditionalVAE3D:
    architecture = dict(entry["architecture"])
    architecture.pop("decile_edges_eV_per_atom", None)  # the condition's edges, not a layer size
    return ConditionalVAE3D(VAEConfig(**architecture))


register_model_kind("density_vae", _vae_from_entry)
register_model_kind("segmentation_unet", lambda entry: UNet3D(UNetConfig(**entry["architecture"])))
