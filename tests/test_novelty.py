"""Structural novelty: the base, a distorted copy of it and known crystals are not novel."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from app.engine.core.errors import ModelError
from app.engine.core.symmetry import space_group
from app.engine.generation.novelty import BASE, KNOWN, NOVEL, StructureIndex, index_arrays


def perovskite(a=3.905, a_site="Sr", b_site="Ti"):
    return Structure(Lattice.cubic(a), [a_site, b_site, "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def distorted(structure):
    """A monoclinic (Cm-like) copy: sheared, strained cell and an off-centred B ion."""
    lattice = Lattice.from_parameters(structure.lattice.a * 1.02, structure.lattice.b * 0.99,
                                      structure.lattice.c * 1.03, 90, 92.5, 90)
    coords = structure.frac_coords.copy()
    coords[1] += [0.0, 0.0, 0.03]
    return Structure(lattice, structure.species, coords)


def rock_salt(a, cation, anion):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture
def index():
    return StructureIndex.from_structures([
        ("mp-5229", perovskite()),
        ("mp-22862", rock_salt(5.64, "Na", "Cl")),
        ("mp-2605", rock_salt(4.81, "Ca", "O")),
    ])


def test_the_base_and_a_distorted_copy_of_it_are_the_base(index):
    base = perovskite(a_site="Ba")  # BaTiO3: not in the index
    copy = distorted(base)
    assert space_group(copy)[1] != space_group(base)[1]
    assert index.novelty(base, base=base).status == BASE
    assert index.novelty(copy, base=base).status == BASE
    assert index.novelty(copy, base=base).label() == "the base"


def test_known_crystals_are_not_novel_even_distorted_or_resized(index):
    found = index.novelty(distorted(perovskite(a=4.1)))
    assert found.status == KNOWN and found.matched_id == "mp-5229" and not found.is_novel
    assert found.label() == "known (mp-5229)"
    # A primitive cell of a known conventional cell is the same crystal.
    assert index.novelty(rock_salt(5.5, "Na", "Cl").get_primitive_structure()).matched_id == "mp-22862"


def test_new_arrangements_and_new_formulas_are_novel(index):
    # Same formula as a known crystal, different structure: NaCl in the CsCl arrangement.
    cscl_type = Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert index.novelty(cscl_type).status == NOVEL
    assert index.novelty(perovskite(a_site="Ca", b_site="Zr")).is_novel
    # A base of another formula does not make a candidate "the base".
    assert index.novelty(perovskite(a_site="Ca", b_site="Zr"), base=perovskite()).status == NOVEL


def test_index_round_trips_through_its_arrays(index, tmp_path):
    entries = [("a", perovskite()), ("b", rock_salt(5.64, "Na", "Cl")), ("c", perovskite(a=4.0))]
    arrays = index_arrays(entries)
    np.savez_compressed(tmp_path / "i.npz", **arrays)
    with np.load(tmp_path / "i.npz", allow_pickle=False) as data:
        loaded = StructureIndex(**{k: data[k] for k in data.files})
    assert len(loaded) == 3
    assert [i for i, _ in loaded.structures_of("SrTiO3")] == ["a", "c"]
    [(_, salt)] = loaded.structures_of("NaCl")
    assert np.allclose(salt.lattice.matrix, entries[1][1].lattice.matrix, atol=1e-5)
    assert loaded.structures_of("KCl") == []


def test_a_missing_or_tampered_index_is_a_model_error(tmp_path):
    with pytest.raises(ModelError):
        StructureIndex.load(tmp_path)
