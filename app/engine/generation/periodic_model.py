"""Conditional VAE over periodic density maps of any crystal (see :mod:`periodic_density`).

The ICSG3D idea (a conditional VAE on 3-D density maps, segmented back into sites) with three
changes that make it work for every crystal system:

* every convolution pads circularly (``padding_mode='circular'``), because the map is one
  period of the crystal, and the decoder upsamples by voxel shuffle (no transposed
  convolutions, which PyTorch cannot pad circularly);
* the lattice ``(ln a, ln b, ln c, cos α, cos β, cos γ)`` comes from a head on the latent code
  (its own loss), since a fractional-coordinate map does not show the cell;
* a species head labels voxels with the vocabulary's elements (no background class: the
  density peaks say where atoms are).

Public API for other modules: :func:`encode_maps`, :func:`sample_prior`, :func:`decode_structures`
(latent codes → pymatgen structures, the one decoder of generation and evaluation) and
:func:`decode_latent` (the full decoded maps, for training figures such as voxel accuracy).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from app.engine.core.registry import register_model_kind

N_CONDITIONS = 10  # formation-energy deciles
N_LATTICE_PARAMS = 6


@dataclass
class PeriodicVAEConfig:
    """Architecture of :class:`PeriodicVAE`.

    ``species`` lists the atomic numbers of the species head (class k is ``species[k]``).
    ``lattice_mean`` / ``lattice_std`` standardise the six lattice parameters (training set).
    """

    grid: int = 24
    in_channels: int = 5
    latent_dim: int = 128
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    n_conditions: int = N_CONDITIONS
    species: list[int] = field(default_factory=list)
    out_width: int = 16
    smooth_density: bool = True
    #: A learned periodic 3×3×3 filter (initialised to the fixed smoothing) replaces the fixed one.
    learned_filter: bool = False
    lattice_mean: list[float] = field(default_factory=lambda: [1.5, 1.6, 1.8, 0.0, 0.0, 0.0])
    lattice_std: list[float] = field(default_factory=lambda: [0.3, 0.3, 0.3, 0.3, 0.3, 0.3])

    def to_dict(self) -> dict:
        return asdict(self)


def _down(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, stride=2, padding=1, padding_mode="circular", bias=False),
        nn.BatchNorm3d(out_channels), nn.LeakyReLU(0.2, inplace=True))


def _up(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv3d(in_channels, out_channels, 3, padding=1, padding_mode="circular", bias=False),
        nn.BatchNorm3d(out_channels), nn.LeakyReLU(0.2, inplace=True))


def smoothing_kernel() -> torch.Tensor:
    """The separable [1, 2, 1]/4 filter along each axis as one 3×3×3 kernel (sums to 1)."""
    taps = torch.tensor([0.25, 0.5, 0.25])
    return taps[:, None, None] * taps[None, :, None] * taps[None, None, :]


def voxel_shuffle(x: torch.Tensor) -> torch.Tensor:
    """(batch, 8·C, D, H, W) → (batch, C, 2D, 2H, 2W), the 3-D pixel shuffle."""
    b, c8, d, h, w = x.shape
    c = c8 // 8
    x = x.view(b, c, 2, 2, 2, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, 2 * d, 2 * h, 2 * w)


class PeriodicVAE(nn.Module):
    """Conditional VAE: periodic maps + condition → z → density, species logits, lattice.

    Encoder input ``(batch, in_channels, G, G, G)`` (density and element descriptors, see
    :func:`periodic_density.encoder_input`); the one-hot condition joins the flattened code.
    Decoder: ``z`` + condition → hidden features ``(batch, out_width, G, G, G)`` → density
    ``(batch, G, G, G)`` (1×1 convolution, then a periodic smoothing) and species logits (a linear map of the features of
    the voxels asked for). Lattice head: MLP on ``z`` + condition → 6 standardised parameters.
    """

    def __init__(self, config: PeriodicVAEConfig):
        super().__init__()
        self.config = config
        channels = config.in_channels
        layers = []
        for width in config.widths:
            layers.append(_down(channels, width))
            channels = width
        self.encoder = nn.Sequential(*layers)
        self.bottom = config.grid // 2 ** len(config.widths)
        flat = channels * self.bottom**3
        # The condition joins the flattened code (not tiled channels: 10 extra input channels
        # at G³ cost more than the rest of the encoder on a CPU).
        self.to_mu = nn.Linear(flat + config.n_conditions, config.latent_dim)
        self.to_logvar = nn.Linear(flat + config.n_conditions, config.latent_dim)
        self.from_latent = nn.Linear(config.latent_dim + config.n_conditions, flat)
        widths = list(reversed(config.widths))
        self.decoder = nn.Sequential(*[_up(a, b) for a, b in zip(widths, widths[1:])])
        # Last factor of 2 by voxel shuffle: cheap at full resolution.
        self.to_full = nn.Conv3d(widths[-1], 8 * config.out_width, 1)
        self.density_head = nn.Conv3d(config.out_width, 1, 1)
        self.species_head = nn.Linear(config.out_width, len(config.species))
        if config.learned_filter:
            self.density_filter = nn.Conv3d(1, 1, 3, padding=1, padding_mode="circular", bias=False)
            with torch.no_grad():
                self.density_filter.weight.copy_(smoothing_kernel()[None, None])
        hidden = 256
        self.lattice_head = nn.Sequential(
            nn.Linear(config.latent_dim + config.n_conditions, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, N_LATTICE_PARAMS))
        self.register_buffer("lattice_mean", torch.tensor(config.lattice_mean, dtype=torch.float32))
        self.register_buffer("lattice_std", torch.tensor(config.lattice_std, dtype=torch.float32))

    def encode(self, maps: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps (batch, in_channels, G, G, G), condition (batch, n_conditions) → μ, log σ² (batch, latent)."""
        hidden = torch.cat([self.encoder(maps).flatten(1), condition], dim=1)
        return self.to_mu(hidden), self.to_logvar(hidden).clamp(-12.0, 6.0)

    def features(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Hidden features at full resolution, (batch, out_width, G, G, G)."""
        zc = torch.cat([z, condition], dim=1)
        hidden = self.from_latent(zc).view(len(z), self.config.widths[-1], *[self.bottom] * 3)
        hidden = self.decoder(F.leaky_relu(hidden, 0.2))
        return F.leaky_relu(voxel_shuffle(self.to_full(hidden)), 0.2)

    def lattice_standardised(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Standardised lattice parameters (batch, 6)."""
        return self.lattice_head(torch.cat([z, condition], dim=1))

    def lattice(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Lattice parameters ``(ln a, ln b, ln c, cos α, cos β, cos γ)``, (batch, 6)."""
        return self.lattice_standardised(z, condition) * self.lattice_std + self.lattice_mean

    def density(self, features: torch.Tensor) -> torch.Tensor:
        """Decoded density (batch, G, G, G) from :meth:`features`.

        The last upsampling (voxel shuffle) is a stride-2 transposed convolution, whose
        checkerboard ripples peak finding would read as atoms; a periodic [1, 2, 1]/4 filter along
        each axis removes the ripple at the grid's Nyquist frequency (a learned 3×3×3 head
        cost 60 % more training time on the CPU). That fixed filter also lowers a one-voxel-wide
        peak to about half its height (the atoms of cells with edges near 10 Å are that narrow), so
        with ``learned_filter`` the filter is a learned single-channel 3×3×3 kernel that starts as
        the fixed one and can learn to sharpen.
        """
        density = self.density_head(features)[:, 0]
        if self.config.learned_filter:
            return self.density_filter(density[:, None])[:, 0]
        if self.config.smooth_density:
            for axis in (1, 2, 3):
                density = 0.5 * density + 0.25 * (torch.roll(density, 1, axis) + torch.roll(density, -1, axis))
        return density

    def species_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Species logits of every voxel, (batch, n_species, G, G, G)."""
        return torch.einsum("bcxyz,sc->bsxyz", features, self.species_head.weight) + \
            self.species_head.bias[None, :, None, None, None]

    def species_logits_at(self, features: torch.Tensor, batch_index: torch.Tensor, voxel_index: torch.Tensor) -> torch.Tensor:
        """Species logits (n, n_species) of chosen voxels: ``batch_index`` (n,), flat ``voxel_index`` (n,)."""
        flat = features.flatten(2)  # (batch, C, G³)
        return self.species_head(flat[batch_index, :, voxel_index])

    def forward(self, maps: torch.Tensor, condition: torch.Tensor):
        """→ features, density, standardised lattice, μ, log σ² (z sampled in training mode)."""
        mu, logvar = self.encode(maps, condition)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        features = self.features(z, condition)
        return features, self.density(features), self.lattice_standardised(z, condition), mu, logvar


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) ‖ N(0, I)) summed over latent dimensions, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def one_hot_condition(deciles, n_conditions: int = N_CONDITIONS) -> torch.Tensor:
    """Decile indices (batch,) → one-hot float (batch, n_conditions)."""
    return F.one_hot(torch.as_tensor(deciles).long(), n_conditions).float()


# --------------------------------------------------------------------------------------------
# API used by the generator and the evaluation
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def encode_maps(model: PeriodicVAE, density: np.ndarray, species: np.ndarray, deciles) -> tuple[np.ndarray, np.ndarray]:
    """μ and log σ² of maps.

    Parameters
    ----------
    density, species : numpy.ndarray
        ``(batch, G, G, G)`` (see :func:`periodic_density.encode`).
    deciles : array-like of int
        ``(batch,)`` formation-energy deciles.

    Returns
    -------
    mu, logvar : numpy.ndarray
        ``(batch, latent_dim)``, float32.
    """
    from app.engine.generation.periodic_density import encoder_input

    model.eval()
    inputs = torch.from_numpy(encoder_input(density, species))
    mu, logvar = model.encode(inputs, one_hot_condition(deciles, model.config.n_conditions))
    return mu.numpy(), logvar.numpy()


@torch.no_grad()
def decode_latent(model: PeriodicVAE, z: np.ndarray, deciles, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoded maps of latent codes.

    Parameters
    ----------
    z : numpy.ndarray
        ``(n, latent_dim)``.
    deciles : array-like of int
        ``(n,)``.

    Returns
    -------
    density : numpy.ndarray
        ``(n, G, G, G)`` float32.
    species : numpy.ndarray
        ``(n, G, G, G)`` int atomic numbers (argmax of the species head at every voxel).
    lattice : numpy.ndarray
        ``(n, 6)`` lattice parameters.
    """
    model.eval()
    table = torch.tensor(model.config.species, dtype=torch.int64)
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))
    condition = one_hot_condition(np.asarray(deciles), model.config.n_conditions)
    out_d, out_s, out_l = [], [], []
    for start in range(0, len(z), batch_size):
        zb, cb = z[start:start + batch_size], condition[start:start + batch_size]
        features = model.features(zb, cb)
        out_d.append(model.density(features).numpy())
        out_s.append(table[model.species_logits(features).argmax(1)].numpy())
        out_l.append(model.lattice(zb, cb).numpy())
    return np.concatenate(out_d), np.concatenate(out_s), np.concatenate(out_l)


def sample_prior(model: PeriodicVAE, n: int, deciles, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Latent codes from the standard normal prior, ``(n, latent_dim)`` float32 (``scale`` × N(0, I)).

    An aggregate-posterior prior can replace this by drawing ``z`` itself and calling
    :func:`decode_structures`.
    """
    return (scale * rng.standard_normal((n, model.config.latent_dim))).astype(np.float32)


#: Decoded cells with an edge outside this range (Å) are rejected before peak finding: an untrained
#: or diverging lattice head can give tiny edges, whose neighbour search would enumerate billions
#: of periodic images, or huge ones.
PLAUSIBLE_PERIODIC_LENGTH = (1.0, 40.0)


def decode_structures(model: PeriodicVAE, z: np.ndarray, deciles, batch_size: int = 64
                      ) -> list[tuple[object | None, np.ndarray, str | None]]:
    """Crystals of latent codes: THE structure decoder of the periodic model (generation, its
    evaluation and prior fitting all decode through it).

    Per code: density map and lattice head; a cell with an edge outside
    :data:`PLAUSIBLE_PERIODIC_LENGTH` is rejected; sites at the density peaks
    (:func:`periodic_density.peak_sites`); their species from the species head run only at the
    sites' peak voxels (one call per batch). That gives the crystals that the full species maps
    of :func:`decode_latent` with :func:`periodic_density.structure_from_maps` give, without the
    ``(n, species, G, G, G)`` logits that were most of the decoding time and memory.

    Parameters
    ----------
    model : PeriodicVAE
        Decoded on the device its parameters are on; set to evaluation mode.
    z : numpy.ndarray
        ``(n, latent_dim)`` latent codes.
    deciles : int or array-like of int
        Formation-energy decile (condition) of every code, or ``(n,)`` one per code.
    batch_size : int
        Codes decoded at once (bounds the ``(batch, out_width, G, G, G)`` float32 features).

    Returns
    -------
    list of (pymatgen.core.Structure or None, numpy.ndarray, str or None)
        Per code: the crystal (None if none came out), the decoded density ``(G, G, G)`` float32
        (dimensionless, as :func:`periodic_density.encode`'s) and why no crystal came out (None
        when one did).
    """
    from app.engine.generation.periodic_density import params_to_lattice, peak_sites, structure_from_sites

    model.eval()
    device = next(model.parameters()).device
    z = np.asarray(z, dtype=np.float32)
    deciles = np.broadcast_to(np.asarray(deciles, dtype=np.int64), (len(z),))
    table = np.asarray(model.config.species, dtype=np.int64)
    low, high = PLAUSIBLE_PERIODIC_LENGTH
    out: list = []
    for start in range(0, len(z), batch_size):
        with torch.inference_mode():
            zb = torch.from_numpy(z[start:start + batch_size]).to(device)
            condition = one_hot_condition(torch.from_numpy(deciles[start:start + batch_size].copy()),
                                          model.config.n_conditions).to(device)
            features = model.features(zb, condition)
            density = model.density(features).float().cpu().numpy()
            lattice = model.lattice(zb, condition).float().cpu().numpy()
        batch: list = [None] * len(density)
        found = []  # (sample in the batch, lattice, fractional coordinates, flat peak voxels)
        grid = density.shape[-1]
        for n, (d, params) in enumerate(zip(density, lattice)):
            lengths = np.exp(params[:3])
            if not np.all((lengths >= low) & (lengths <= high)):
                batch[n] = (None, d, f"The decoded cell edges ({', '.join(f'{x:.3g}' for x in lengths)} Å) are "
                                     f"outside the plausible range {low:g}–{high:g} Å.")
                continue
            try:
                cell = params_to_lattice(params)
                voxels, frac = peak_sites(d, cell)
            except ValueError as error:  # a degenerate decoded cell
                batch[n] = (None, d, f"The decoded cell is not a crystal: {error}")
                continue
            if len(voxels) == 0:
                batch[n] = (None, d, f"No atom was found in the decoded map (cell {cell.abc}).")
                continue
            found.append((n, cell, frac, (voxels[:, 0] * grid + voxels[:, 1]) * grid + voxels[:, 2]))
        if found:
            with torch.inference_mode():
                batch_index = torch.from_numpy(np.concatenate([np.full(len(f[3]), f[0]) for f in found]))
                voxel_index = torch.from_numpy(np.concatenate([f[3] for f in found]))
                classes = model.species_logits_at(features, batch_index.to(device),
                                                  voxel_index.to(device)).argmax(1).cpu().numpy()
            first = 0
            for n, cell, frac, voxels in found:
                structure = structure_from_sites(cell, frac, table[classes[first:first + len(voxels)]])
                first += len(voxels)
                batch[n] = (structure, density[n], None if structure is not None else
                            f"No atom was found in the decoded map (cell {cell.abc}).")
        out += batch
    return out


def _from_entry(entry: dict) -> PeriodicVAE:
    architecture = dict(entry["architecture"])
    architecture.pop("decile_edges_eV_per_atom", None)  # the condition's edges, not a layer size
    return PeriodicVAE(PeriodicVAEConfig(**architecture))


register_model_kind("periodic_vae", _from_entry)
