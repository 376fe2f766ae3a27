"""Exported CIFs read back to the crystal written: symmetrised at the tolerance, or in P1."""

import warnings

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifParser

from app.engine.io import export
from app.engine.io.crystal_io import read_crystal_file
from app.engine.io.export import same_sites, symmetrised_structure, write_cif

SYMPREC = 0.01  # Å, write_cif's default


def distorted_perovskite() -> Structure:
    """A relaxed-candidate-like CaTiO3: beta = 90.046°, a ≈ c to 2e-4 Å, atoms 0.001-0.003 off ideal."""
    lattice = Lattice.from_parameters(3.8876, 3.8916, 3.8879, 90, 90.046, 90)
    return Structure(lattice, ["Ca", "Ti", "O", "O", "O"],
                     [[0.0012, 0.5, 0.9977], [0.5002, 0, 0.4999], [0.4993, 0, 0.0007],
                      [0.4992, 0.5, 0.5008], [0.0007, 0, 0.4993]])


def normal_structures() -> dict[str, Structure]:
    srtio3 = Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"],
                                       [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])
    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                       [[0, 0, 0], [0.3048, 0.3048, 0]])
    nacl_primitive = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                               [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()
    charged = srtio3.copy()
    charged.add_oxidation_state_by_element({"Sr": 2, "Ti": 4, "O": -2})
    return {"SrTiO3": srtio3, "rutile": rutile, "NaCl primitive cell": nacl_primitive, "SrTiO3 with charges": charged}


def read_back(path) -> dict[str, Structure]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        [pymatgen_read] = CifParser(str(path)).parse_structures(primitive=False)
    [app_read] = read_crystal_file(path)
    assert app_read.ok and not app_read.warnings, app_read.warnings
    return {"CifParser": pymatgen_read, "app reader": app_read.structure}


@pytest.mark.parametrize("name", ["distorted CaTiO3", *normal_structures()])
def test_exported_cif_reads_back_to_the_structure_written(tmp_path, name):
    structure = distorted_perovskite() if name == "distorted CaTiO3" else normal_structures()[name]
    path = write_cif(structure, tmp_path / "crystal.cif")
    assert "P 1" not in path.read_text()  # written with its symmetry, not the P1 fallback
    symmetric = symmetrised_structure(structure, SYMPREC)
    for reader, read in read_back(path).items():
        assert len(read) == len(structure), reader
        assert read.composition == structure.composition, reader
        assert same_sites(read, symmetric, 1e-3), reader  # exactly what was written
        assert same_sites(read, structure, 2 * SYMPREC), reader  # which is the input, moved < symprec


def test_distorted_cell_keeps_its_pseudo_symmetry(tmp_path):
    text = write_cif(distorted_perovskite(), tmp_path / "c.cif").read_text()
    assert "_symmetry_Int_Tables_number   38" in text  # Amm2 at 0.01 Å (the old writer's file said Pm)


def test_p1_fallback_keeps_coordinates_when_the_symmetric_file_would_not_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_reads_back", lambda text, written: False)
    structure = distorted_perovskite()
    path = write_cif(structure, tmp_path / "c.cif")
    assert "'x, y, z'" in path.read_text() and "_symmetry_Int_Tables_number   1" in path.read_text()
    for reader, read in read_back(path).items():
        assert same_sites(read, structure, 1e-5), reader


def test_disordered_structures_are_written_in_p1_with_occupancies(tmp_path):
    structure = Structure(Lattice.cubic(4.0), [{"Sr": 0.5, "Ba": 0.5}, "Ti", "O", "O", "O"],
                          [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    path = write_cif(structure, tmp_path / "c.cif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        [read] = CifParser(str(path)).parse_structures(primitive=False)
    assert len(read) == 5 and read.composition == structure.composition


def test_symmetrising_moves_sites_less_than_the_tolerance():
    structure = distorted_perovskite()
    symmetric = symmetrised_structure(structure, SYMPREC)
    shift = symmetric.frac_coords - structure.frac_coords
    moved = np.linalg.norm((shift - np.round(shift)) @ structure.lattice.matrix, axis=1)
    assert moved.max() < SYMPREC and [s.species_string for s in symmetric] == [s.species_string for s in structure]


@pytest.mark.parametrize("seed", [0, 1])
def test_rattled_structures_keep_their_symmetry_and_read_back(tmp_path, seed):
    """Sites 0.003 Å off and a cell strained by 4e-4: the translations found are fits (1.8e-5
    instead of 0), which written as they are make readers rebuild doubled sites."""
    rng = np.random.default_rng(seed)
    rock_salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    for original in (rock_salt, normal_structures()["SrTiO3"]):
        structure = original.copy()
        structure.apply_strain(rng.uniform(-4e-4, 4e-4, 3))
        structure.perturb(0.003)
        path = write_cif(structure, tmp_path / f"{seed}.cif")
        assert "P 1" not in path.read_text()
        for reader, read in read_back(path).items():
            assert same_sites(read, structure, 2 * SYMPREC), reader
