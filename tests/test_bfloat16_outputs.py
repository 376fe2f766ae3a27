"""bfloat16 prediction keeps float32 outputs: no snapping of predictions to a target_std/128 grid."""

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from app.engine.properties.cgcnn import CGCNN, CGCNNConfig
from app.engine.properties.predictor import PropertyPredictor, graph_for_prediction

TARGETS = {
    "formation_energy": ["formation_energy_per_atom"],
    "band_gap": ["band_gap"],
    "elastic": ["log10_bulk_modulus", "log10_shear_modulus", "poisson_ratio"],
    "optical": ["refractive_index"],
}


def random_models() -> dict[str, CGCNN]:
    torch.manual_seed(0)
    models = {}
    for name, targets in TARGETS.items():
        model = CGCNN(CGCNNConfig(targets=targets, atom_dim=8, hidden_dim=8, n_conv=1))
        with torch.no_grad():
            model.output.weight.mul_(20)  # standardised outputs of a few units, as trained models give
            model.target_std.fill_(1.1)
            model.target_mean.fill_(-1.3)
        models[name] = model
    return models


def crystals() -> list[Structure]:
    rock_salt = [[0, 0, 0], [0.5, 0.5, 0.5]]
    return [
        Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], rock_salt),
        Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.21), ["Mg", "O"], rock_salt),
        Structure.from_spacegroup("Fm-3m", Lattice.cubic(6.29), ["K", "Cl"], rock_salt),
        Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"],
                                  [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]),
        Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.84), ["Ca", "Ti", "O"],
                                  [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]),
        Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                  [[0, 0, 0], [0.3048, 0.3048, 0]]),
    ]


def on_bfloat16_grid(standardised: np.ndarray) -> np.ndarray:
    """True where a standardised value is (to float32 rounding) a bfloat16 number (8 significant bits)."""
    snapped = torch.from_numpy(standardised.astype(np.float32)).to(torch.bfloat16).double().numpy()
    return np.abs(standardised - snapped) <= 1e-5 * np.maximum(np.abs(standardised), 1e-2)


def test_bfloat16_predictions_are_not_snapped_to_a_std_over_128_grid():
    models = random_models()
    graphs = [graph_for_prediction(s) for s in crystals()]
    bf16 = PropertyPredictor(device="cpu", models=models, element_references={}, precision="bfloat16")
    fp32 = PropertyPredictor(device="cpu", models=models, element_references={}, precision="float32")
    out_bf16, out_fp32 = bf16.predict_graphs(graphs), fp32.predict_graphs(graphs)
    for name, model in models.items():
        values = out_bf16[name].astype(np.float64)
        standardised = (values - model.target_mean.double().numpy()) / model.target_std.double().numpy()
        assert np.abs(standardised).max() > 1  # where one bfloat16 step is std/128 or coarser
        assert on_bfloat16_grid(standardised).mean() < 0.5, name
        assert len(np.unique(values[:, 0])) == len(graphs), name  # six crystals, six values
        # bfloat16 convolutions still: close to, not equal to, float32
        assert np.abs(values - out_fp32[name]).max() < 0.1 * np.abs(out_fp32[name]).max(), name
