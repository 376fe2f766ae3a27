"""Crystal graphs and the CGCNN: shapes, physics invariances, batching."""

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from app.engine.properties.cgcnn import CGCNN, CGCNNConfig, batch_to_tensors
from app.engine.core.elements import FEATURE_LENGTH, element_feature_table
from app.engine.properties.graph import build_graph, collate


def nacl(a=5.64):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_element_table_distinguishes_elements():
    table = element_feature_table()
    assert table.shape == (101, FEATURE_LENGTH)
    assert not table[0].any()
    # Every real element of the first six periods gets group, period and block categories.
    assert (table[1:87].sum(axis=1) >= 5).all()
    assert not np.array_equal(table[11], table[17])  # Na vs Cl
    assert table[1][0] == 1.0  # hydrogen is group 1


def test_graph_of_rock_salt_has_six_nearest_neighbours_at_half_a():
    graph = build_graph(nacl())
    assert graph.neighbor_index.shape == (8, 12)
    assert graph.neighbor_mask.all()
    np.testing.assert_allclose(graph.neighbor_distance[:, :6], 5.64 / 2, atol=1e-4)
    np.testing.assert_allclose(graph.neighbor_distance[:, 6:], 5.64 / np.sqrt(2), atol=1e-4)
    # Nearest neighbours of Na are Cl.
    na = np.flatnonzero(graph.atomic_numbers == 11)[0]
    assert set(graph.atomic_numbers[graph.neighbor_index[na, :6]]) == {17}


def test_isolated_atom_gets_masked_padding():
    structure = Structure(Lattice.cubic(20.0), ["Ar"], [[0, 0, 0]])
    graph = build_graph(structure, cutoff=8.0)
    assert not graph.neighbor_mask.any()


def test_collate_offsets_neighbour_indices():
    a, b = build_graph(nacl()), build_graph(Structure(Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]))
    batch = collate([a, b])
    assert batch.n_crystals == 2
    assert batch.neighbor_index[8:].min() >= 8
    assert list(np.bincount(batch.crystal_index)) == [8, 2]


@pytest.fixture
def model():
    torch.manual_seed(1)
    return CGCNN(CGCNNConfig(targets=["a", "b"], atom_dim=16, hidden_dim=16, n_conv=2)).eval()


def _predict(model, structures):
    with torch.no_grad():
        return model.predict(batch_to_tensors(collate([build_graph(s) for s in structures]))).numpy()


def test_prediction_is_invariant_to_cell_choice(model):
    """Mean pooling over a periodic graph: primitive cell, conventional cell and supercell agree."""
    conventional = nacl()
    primitive = conventional.get_primitive_structure()
    supercell = conventional.copy()
    supercell.make_supercell([2, 1, 1])
    out = _predict(model, [conventional, primitive, supercell])
    np.testing.assert_allclose(out[0], out[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[0], out[2], rtol=1e-4, atol=1e-5)


def test_prediction_depends_on_chemistry_and_geometry(model):
    out = _predict(model, [nacl(5.64), nacl(6.5), Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["K", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])])
    assert not np.allclose(out[0], out[1])
    assert not np.allclose(out[0], out[2])


def test_batch_prediction_equals_single_prediction(model):
    structures = [nacl(), Structure(Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])]
    together = _predict(model, structures)
    alone = np.concatenate([_predict(model, [s]) for s in structures])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_target_standardisation_is_undone_by_predict(model):
    batch = batch_to_tensors(collate([build_graph(nacl())]))
    model.target_mean.fill_(10.0)
    model.target_std.fill_(2.0)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(batch), model(batch) * 2 + 10, rtol=1e-6)
