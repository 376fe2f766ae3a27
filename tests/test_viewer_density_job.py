"""The viewer's density job: the representation the generator uses for each crystal."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from app.engine.core.errors import StructureReadError
from app.worker.jobs import encode_density


def test_cubic_cells_get_the_cubic_map_perovskites_and_other_systems_the_periodic_one(example):
    nacl = encode_density(None, Structure.from_file(str(example("NaCl"))))
    assert nacl["density"].shape == (32, 32, 32) and nacl["lattice_matrix"] is None
    # ABX3 perovskites go to the periodic generator (it reconstructs them better), so their map is periodic.
    srtio3 = encode_density(None, Structure.from_file(str(example("SrTiO3"))))
    assert srtio3["density"].shape == (24, 24, 24) and srtio3["lattice_matrix"].shape == (3, 3)
    rutile = encode_density(None, Structure.from_file(str(example("TiO2_rutile"))))
    matrix = rutile["lattice_matrix"]
    assert rutile["density"].shape == (24, 24, 24)
    assert np.allclose(matrix, rutile["structure"].lattice.matrix)  # the map's cell is the structure's
    assert sorted(np.round(rutile["lattice_abc"], 3)) == sorted(np.round(np.linalg.norm(matrix, axis=1), 3))
    assert rutile["structure"].composition.reduced_formula == "TiO2"


def test_crystals_neither_map_holds_get_the_site_limit():
    rng = np.random.default_rng(0)
    big = Structure(Lattice.orthorhombic(9, 10, 11), ["Na"] * 12 + ["Cl"] * 12, rng.uniform(0, 1, (24, 3)))
    with pytest.raises(StructureReadError, match="20"):
        encode_density(None, big)
