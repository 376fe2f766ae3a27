"""The DING networks (Pathak et al. 2020) in PyTorch.

- :class:`PropertyDNN`: the predictor of Table 1, an 8-layer dense network with dropout after
  layers 2, 3 and 4, one per property, on the one-hot count feature vector.
- :class:`CompositionResidualDNN`: the predictor that ships where it is more accurate than the
  paper's: a least-squares elemental part plus a network on element fractions and
  elemental-property statistics for the rest.
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


def _regressor(n_features: int, layers, activation) -> nn.Sequential:
    """Dense layers of ``(width, dropout)`` with ``activation`` after each, then one linear output."""
    modules: list[nn.Module] = []
    width_in = n_features
    for width, dropout in layers:
        modules += [nn.Linear(width_in, width), activation()]
        if dropout > 0:
            modules.append(nn.Dropout(dropout))
        width_in = width
    modules.append(nn.Linear(width_in, 1))
    return nn.Sequential(*modules)


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
        self.net = _regressor(n_features, layers, nn.ReLU)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised prediction, shape ``(n,)``, from features ``(n, n_features)``."""
        return self.net(features).squeeze(-1)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Prediction in the property's units, shape ``(n,)``."""
        return self.forward(features) * self.target_std + self.target_mean

    def predict_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """Prediction in the property's units, shape ``(n,)``, from count rows ``(n, len(VOCABULARY))``."""
        from app.engine.compositions.formula import one_hot_counts

        return self.predict(torch.from_numpy(one_hot_counts(counts.numpy())))


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


#: Elemental properties (pymatgen) summarised over a composition by :class:`CompositionResidualDNN`.
ELEMENT_PROPERTY_NAMES = ("Z", "electronegativity", "atomic_radius", "row", "group", "mendeleev_number",
                          "atomic_mass", "molar_volume", "ionization_energy", "electron_affinity", "melting_point",
                          "average_ionic_radius", "max_oxidation_state", "min_oxidation_state", "s_block", "p_block",
                          "d_block", "f_block", "valence_electrons")


def element_property_table() -> "np.ndarray":
    """Elemental properties of :data:`VOCABULARY`, shape ``(len(VOCABULARY), len(ELEMENT_PROPERTY_NAMES))``.

    From pymatgen's element data; a property pymatgen lacks for an element is the mean of that
    property over the vocabulary. Used at training time only: the table is stored in the model.
    """
    import warnings

    import numpy as np
    from pymatgen.core import Element

    def value(element, getter):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = getter(element)
            return float(result) if result is not None else np.nan
        except (ValueError, TypeError, AttributeError, KeyError, IndexError):
            return np.nan

    getters = (lambda e: e.Z, lambda e: e.X, lambda e: e.atomic_radius, lambda e: e.row, lambda e: e.group,
               lambda e: e.mendeleev_no, lambda e: e.atomic_mass, lambda e: e.molar_volume,
               lambda e: e.ionization_energy, lambda e: e.electron_affinity, lambda e: e.melting_point,
               lambda e: e.average_ionic_radius,
               lambda e: max(e.common_oxidation_states) if e.common_oxidation_states else np.nan,
               lambda e: min(e.common_oxidation_states) if e.common_oxidation_states else np.nan,
               lambda e: e.block == "s", lambda e: e.block == "p", lambda e: e.block == "d", lambda e: e.block == "f",
               lambda e: e.valence[1] if e.valence else np.nan)
    table = np.array([[value(Element(symbol), g) for g in getters] for symbol in VOCABULARY], dtype=np.float64)
    column_mean = np.nanmean(table, axis=0)
    missing = np.isnan(table)
    table[missing] = np.take(column_mean, np.nonzero(missing)[1])
    return table.astype(np.float32)


class CompositionResidualDNN(nn.Module):
    """A property as a linear elemental part plus a learnt residual: ``y ≈ Σᵢ xᵢ cᵢ + f(composition)``.

    ``xᵢ`` are the element fractions and ``cᵢ`` per-element coefficients fitted by least squares
    on the training split (for the volume per atom, elemental volumes; for the total energy,
    elemental reference energies plus the formation enthalpy's linear part). ``f`` is a dense
    network on the element fractions and on fraction-weighted statistics of elemental properties
    (mean, maximum, minimum, range, mean absolute deviation, standard deviation of each of
    :data:`ELEMENT_PROPERTY_NAMES`, the number of elements and Σxᵢ²), standardised with
    training-split statistics stored as buffers. The input is a count row, so the model needs
    nothing but its state dict at run time.

    Parameters
    ----------
    n_elements, n_element_properties : int
        Vocabulary size and columns of the element property table.
    hidden : sequence of int
        Widths of the hidden layers (SiLU after each).
    dropout : float
        Dropout after every hidden layer.
    members : int
        Networks of the same shape on the same inputs, trained independently from different
        initial weights; the residual is their mean (a deep ensemble: the networks fit their
        training rows almost exactly, and their errors elsewhere partly cancel). ``net`` is the
        first, ``extra_nets`` the others, so a one-member model has the weight keys it always had.
    """

    def __init__(self, n_elements: int = len(VOCABULARY), n_element_properties: int = len(ELEMENT_PROPERTY_NAMES),
                 hidden=(512, 512, 512, 512), dropout: float = 0.0, members: int = 1):
        super().__init__()
        if members < 1:
            raise ValueError("An ensemble needs at least one member network.")
        self.n_elements = n_elements
        n_features = n_elements + 6 * n_element_properties + 2
        layers = [(width, dropout) for width in hidden]
        self.net = _regressor(n_features, layers, nn.SiLU)
        self.extra_nets = nn.ModuleList(_regressor(n_features, layers, nn.SiLU) for _ in range(members - 1))
        self.register_buffer("element_properties", torch.zeros(n_elements, n_element_properties))
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.register_buffer("elemental_coefficients", torch.zeros(n_elements))
        # The property of each pure element where it is known by definition (NaN: no rule): a formation
        # enthalpy is 0 for an element; the data hold almost no pure elements, so the network cannot learn it.
        self.register_buffer("element_values", torch.full((n_elements,), float("nan")))
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    @staticmethod
    def fractions(counts: torch.Tensor) -> torch.Tensor:
        """Element fractions ``(n, n_elements)`` of count rows (an empty row stays zero)."""
        counts = counts.to(torch.float32)
        return counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)

    def raw_features(self, counts: torch.Tensor) -> torch.Tensor:
        """Unstandardised network inputs ``(n, n_features)`` of count rows ``(n, n_elements)``."""
        x = self.fractions(counts)
        table = self.element_properties
        present = (counts > 0).unsqueeze(-1)
        mean = x @ table
        spread = table.unsqueeze(0).expand(len(x), -1, -1)
        high = spread.masked_fill(~present, float("-inf")).amax(dim=1)
        low = spread.masked_fill(~present, float("inf")).amin(dim=1)
        empty = ~present.any(dim=1)
        high, low = high.masked_fill(empty, 0.0), low.masked_fill(empty, 0.0)
        deviation = torch.einsum("ne,nep->np", x, (spread - mean.unsqueeze(1)).abs())
        std = (x @ table.pow(2) - mean.pow(2)).clamp_min(0.0).sqrt()
        n_elements = present.squeeze(-1).sum(dim=1, keepdim=True).to(torch.float32)
        return torch.cat([x, mean, high, low, high - low, deviation, std, n_elements,
                          x.pow(2).sum(dim=1, keepdim=True)], dim=1)

    def features(self, counts: torch.Tensor) -> torch.Tensor:
        return (self.raw_features(counts) - self.feature_mean) / self.feature_std

    @property
    def members(self) -> int:
        return 1 + len(self.extra_nets)

    def member_outputs(self, counts: torch.Tensor) -> torch.Tensor:
        """Each member's standardised residual, shape ``(members, n)`` (training fits each on its own)."""
        x = self.features(counts)
        return torch.stack([net(x).squeeze(-1) for net in (self.net, *self.extra_nets)])

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        """Standardised residual, shape ``(n,)``, from count rows ``(n, n_elements)``: the members' mean."""
        return self.member_outputs(counts).mean(dim=0)

    def linear_part(self, counts: torch.Tensor) -> torch.Tensor:
        """``Σᵢ xᵢ cᵢ``, shape ``(n,)``."""
        return self.fractions(counts) @ self.elemental_coefficients

    def predict_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """The property in its units, shape ``(n,)``, from count rows ``(n, n_elements)``.

        A pure element whose value is known by definition (``element_values``) gets that value.
        """
        value = self.forward(counts) * self.target_std + self.target_mean + self.linear_part(counts)
        present = counts > 0
        known = self.element_values[present.to(torch.int64).argmax(dim=1)]
        rule = (present.sum(dim=1) == 1) & torch.isfinite(known)
        return torch.where(rule, known, value)
