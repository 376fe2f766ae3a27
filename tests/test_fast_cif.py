"""The fast CIF reader builds pymatgen's structure exactly, or leaves the block to pymatgen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifParser, CifWriter

from app.engine.io.crystal_io import ReadLimits, read_crystal_file
from app.engine.io.fast_cif import read_plain_cif_block

REAL_WORLD = Path(__file__).parent / "data" / "real_world"


def pymatgen_structure(text: str) -> Structure:
    return CifParser.from_str(text).parse_structures(primitive=False, on_error="raise")[0]


def assert_same(fast: Structure, slow: Structure, exact: bool = True) -> None:
    assert len(fast) == len(slow)
    assert np.array_equal(fast.lattice.matrix, slow.lattice.matrix)
    assert [s.species for s in fast] == [s.species for s in slow]
    assert fast.labels == slow.labels
    if exact:
        assert np.array_equal(fast.frac_coords, slow.frac_coords)
    else:
        d = fast.frac_coords - slow.frac_coords
        assert np.abs(d - np.round(d)).max() < 1e-10
    assert fast.as_dict()["sites"][0]["species"] == slow.as_dict()["sites"][0]["species"]


def p1_cif(structure: Structure) -> str:
    return str(CifWriter(structure))


def symmetrised_cif(structure: Structure) -> str:
    return str(CifWriter(structure, symprec=0.01))


def perovskite() -> Structure:
    return Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def wurtzite() -> Structure:  # hexagonal, coordinates at 1/3 and 2/3
    return Structure(Lattice.hexagonal(3.25, 5.21), ["Zn", "Zn", "O", "O"],
                     [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.382], [2 / 3, 1 / 3, 0.882]])


def rock_salt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.mark.parametrize("make", [perovskite, wurtzite, rock_salt])
def test_p1_files_give_pymatgens_structure_exactly(make):
    text = p1_cif(make())
    fast = read_plain_cif_block(text)
    assert fast is not None
    assert_same(fast.structure, pymatgen_structure(text))


@pytest.mark.parametrize("make", [perovskite, wurtzite, rock_salt])
def test_symmetry_operations_are_expanded_and_merged_as_pymatgen_does(make):
    text = symmetrised_cif(make())
    assert "_symmetry_equiv_pos_as_xyz" in text and text.count("'") > 4  # several operations
    fast = read_plain_cif_block(text)
    assert fast is not None
    slow = pymatgen_structure(text)
    assert_same(fast.structure, slow, exact=False)
    assert len(fast.structure) == len(make().get_sorted_structure())


def test_rounding_to_one_third_is_reported_as_pymatgen_reports_it():
    text = p1_cif(wurtzite()).replace("0.33333333", "0.333333").replace("0.66666667", "0.666667")
    fast = read_plain_cif_block(text)
    parser = CifParser.from_str(text)
    slow = parser.parse_structures(primitive=False, on_error="raise")[0]
    assert_same(fast.structure, slow)
    assert fast.warnings == parser.warnings and "rounded to ideal values" in fast.warnings[0]


def edited(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


PEROVSKITE = p1_cif(perovskite())
DECLINED = {
    "partial occupancy": edited(PEROVSKITE, "0.50000000  1\n", "0.50000000  0.5\n"),
    "two sites on one position": edited(PEROVSKITE, "Sr  Sr0  1  0.00000000  0.00000000  0.00000000",
                                        "Sr  Sr0  1  0.50000000  0.50000000  0.50000000"),
    "label as element": edited(PEROVSKITE, "  Sr  Sr0", "  Sr2+  Sr0"),
    "placeholder occupancy": edited(PEROVSKITE, "0.50000000  1\n", "0.50000000  ?\n"),
    "quoted number": edited(PEROVSKITE, "_cell_length_a   3.90500000", "_cell_length_a   '3.905'"),
    "upper-case tag": edited(PEROVSKITE, "_atom_site_fract_x", "_atom_site_Fract_X"),
    "no symmetry operations": PEROVSKITE.replace(" _symmetry_equiv_pos_site_id\n", "").replace(
        "loop_\n _symmetry_equiv_pos_as_xyz\n  1  'x, y, z'\n", ""),
    "formula in other ratios": edited(PEROVSKITE, "'Sr1 Ti1 O3'", "'Sr1 Ti1 O2'"),
    "noble gas": edited(PEROVSKITE, "  Sr  Sr0", "  Xe  Sr0"),
    "oxidation states": PEROVSKITE + "loop_\n _atom_type_symbol\n _atom_type_oxidation_number\n  Sr 2\n  Ti 4\n  O -2\n",
    "truncated loop": PEROVSKITE.rsplit("\n", 2)[0] + "  0.5\n",
    "missing cell length": edited(PEROVSKITE, "_cell_length_b   3.90500000\n", ""),
}


@pytest.mark.parametrize("case", sorted(DECLINED))
def test_blocks_outside_the_plain_subset_are_left_to_pymatgen(case):
    assert read_plain_cif_block(DECLINED[case]) is None


@pytest.mark.parametrize("case", sorted(DECLINED))
def test_declined_blocks_read_the_same_through_the_file_reader(case, tmp_path):
    path = tmp_path / "x.cif"
    path.write_text(DECLINED[case])
    fast, slow = read_crystal_file(path), read_crystal_file(path, ReadLimits(fast_cif=False))
    assert [(e.error, e.warnings) for e in fast] == [(e.error, e.warnings) for e in slow]
    for a, b in zip(fast, slow):
        assert (a.structure is None) == (b.structure is None)
        if a.structure is not None:
            assert a.structure == b.structure


@pytest.mark.parametrize("path", sorted(p for p in REAL_WORLD.rglob("*") if p.is_file()), ids=lambda p: p.name)
def test_real_world_files_read_the_same_with_and_without_the_fast_path(path):
    fast, slow = read_crystal_file(path), read_crystal_file(path, ReadLimits(fast_cif=False))
    assert [(e.source, e.error, e.warnings) for e in fast] == [(e.source, e.error, e.warnings) for e in slow]
    for a, b in zip(fast, slow):
        if a.structure is not None:
            assert_same(a.structure, b.structure, exact=False)
