"""Reading crystal files: good files load, every bad file becomes a clear error entry."""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.groups import SpaceGroup

from app.engine.core.cancel import CancelToken
from app.engine.io.crystal_io import (
    LoadedCrystal,
    ReadLimits,
    expand_paths,
    read_crystal_file,
    read_crystals,
)
from app.engine.core.errors import CancelledError

CELL = """_cell_length_a {a}
_cell_length_b {a}
_cell_length_c {a}
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma {gamma}
"""
ATOMS_HEADER = """loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
"""
NACL_ATOMS = "Na1 Na 0 0 0 1\nCl1 Cl 0.5 0.5 0.5 1\n"


@functools.cache
def fm3m_operations() -> tuple[str, ...]:
    """The 192 symmetry operations of Fm-3m as CIF xyz strings (computed once: it takes ~0.3 s)."""
    return tuple(op.as_xyz_str() for op in SpaceGroup("Fm-3m").symmetry_ops)


def nacl_cif(block="NaCl", a="5.6402", gamma="90", atoms=NACL_ATOMS, with_ops=True) -> str:
    """NaCl in Fm-3m given as its asymmetric unit (two atoms)."""
    text = f"data_{block}\n_symmetry_space_group_name_H-M 'F m -3 m'\n" + CELL.format(a=a, gamma=gamma)
    if with_ops:
        ops = fm3m_operations()
        assert len(ops) == 192
        text += "loop_\n_symmetry_equiv_pos_as_xyz\n" + "".join(f"'{op}'\n" for op in ops)
    return text + ATOMS_HEADER + atoms


def p1_cif(atoms: str, a="4.0") -> str:
    return "data_p1\n_symmetry_space_group_name_H-M 'P 1'\n" + CELL.format(a=a, gamma="90") + ATOMS_HEADER + atoms


def poscar(species="Na Cl", coords="0 0 0\n0.5 0.5 0.5", vectors="5.64 0 0\n0 5.64 0\n0 0 5.64") -> str:
    return f"NaCl\n1.0\n{vectors}\n{species}\n1 1\ndirect\n{coords}\n"


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def read_one(path: Path, limits: ReadLimits = ReadLimits()) -> LoadedCrystal:
    results = read_crystal_file(path, limits)
    assert len(results) == 1
    return results[0]


def assert_error(entry: LoadedCrystal, *words: str) -> None:
    assert not entry.ok and entry.structure is None and entry.error
    assert entry.name.partition("#")[0] in entry.error
    for word in words:
        assert word.lower() in entry.error.lower(), entry.error
    assert "Traceback" not in entry.error and "\n" not in entry.error


# --- good files -----------------------------------------------------------------------------------

def test_cif_with_symmetry_operations_expands_to_conventional_cell(tmp_path):
    entry = read_one(write(tmp_path, "NaCl.cif", nacl_cif()))
    assert entry.ok and entry.error is None
    assert entry.source == str(tmp_path / "NaCl.cif") and entry.name == "NaCl.cif"
    assert len(entry.structure) == 8
    assert entry.structure.composition.reduced_formula == "NaCl"
    assert entry.structure.lattice.a == pytest.approx(5.6402)
    assert not any("Partially occupied" in w for w in entry.warnings)


def test_cif_with_only_a_space_group_symbol_is_expanded(tmp_path):
    entry = read_one(write(tmp_path, "NaCl_sg.cif", nacl_cif(with_ops=False)))
    assert entry.ok and len(entry.structure) == 8
    assert any("space group symbol" in w for w in entry.warnings)


def test_cif_numbers_with_uncertainties(tmp_path):
    atoms = "Na1 Na 0 0 0 1.00(2)\nCl1 Cl 0.5000(1) 0.5 0.5 1\n"
    entry = read_one(write(tmp_path, "unc.cif", nacl_cif(a="5.6402(3)", atoms=atoms)))
    assert entry.ok
    assert entry.structure.lattice.abc == pytest.approx((5.6402,) * 3)
    assert len(entry.structure) == 8


def test_cif_with_two_blocks_one_broken(tmp_path):
    broken = nacl_cif(block="broken")[:-12]  # cut inside the last atom row
    path = write(tmp_path, "two.cif", nacl_cif(block="good") + broken)
    good, bad = read_crystal_file(path)
    assert good.ok and good.source == f"{path}#good" and good.name == "two.cif#good"
    assert len(good.structure) == 8
    assert bad.source == f"{path}#broken" and bad.name == "two.cif#broken" and bad.block == "broken"
    assert_error(bad, "two.cif#broken", "truncated")


def test_cif_blocks_without_structure_are_skipped_and_equal_names_kept(tmp_path):
    publication = "data_global\n_publ_section_title 'NaCl, twice'\n"
    path = write(tmp_path, "twice.cif", publication + nacl_cif(block="x") + nacl_cif(block="x", a="5.7"))
    first, second = read_crystal_file(path)  # pymatgen alone would keep only the last block named "x"
    assert (first.name, second.name) == ("twice.cif#x", "twice.cif#x~2")
    assert first.ok and second.ok
    assert (first.structure.lattice.a, second.structure.lattice.a) == pytest.approx((5.6402, 5.7))


def test_gzipped_cif(tmp_path):
    path = write(tmp_path, "NaCl.cif.gz", gzip.compress(nacl_cif().encode()))
    entry = read_one(path)
    assert entry.ok and len(entry.structure) == 8
    files, _ = expand_paths([tmp_path])
    assert files == [path]


def test_poscar_by_name_and_suffix(tmp_path):
    for name in ("POSCAR", "CONTCAR_relaxed", "NaCl.vasp"):
        entry = read_one(write(tmp_path, name, poscar()))
        assert entry.ok, entry.error
        assert entry.structure.composition.reduced_formula == "NaCl"


def test_pymatgen_json_and_non_structure_json(tmp_path):
    structure = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert read_one(write(tmp_path, "MgO.json", structure.to(fmt="json"))).ok
    assert_error(read_one(write(tmp_path, "config.json", json.dumps({"epochs": 3}))), "not a pymatgen Structure")


def test_explicit_file_with_unknown_suffix_is_still_attempted(tmp_path):
    assert read_one(write(tmp_path, "NaCl.txt", nacl_cif())).ok  # CIF content is recognised
    assert_error(read_one(write(tmp_path, "notes.txt", "just some notes\n")), "not in a supported crystal format")


def test_folder_expands_to_supported_files_only(tmp_path):
    folder = tmp_path / "data"
    write(folder, "b.cif", nacl_cif())
    write(folder, "README.txt", "These are my crystals.\n")
    write(folder, "sub/POSCAR", poscar())
    write(folder, "a.vasp", poscar())
    write(folder, ".hidden.cif", b"\x00\x05Mac resource fork")
    write(folder, "broken.cif", "")

    files, errors = expand_paths([folder, tmp_path / "missing.cif"])
    assert [p.relative_to(folder).as_posix() for p in files] == ["a.vasp", "b.cif", "broken.cif", "sub/POSCAR"]
    assert len(errors) == 1 and "File not found" in errors[0].error and "missing.cif" in errors[0].error

    results = read_crystals([folder])
    assert [r.name for r in results] == ["a.vasp", "b.cif", "broken.cif", "POSCAR"]
    assert [r.ok for r in results] == [True, True, False, True]
    assert_error(results[2], "empty")


def test_folder_without_crystal_files(tmp_path):
    write(tmp_path / "empty", "README.txt", "nothing here\n")
    (entry,) = read_crystals([tmp_path / "empty"])
    assert not entry.ok and "no supported crystal files" in entry.error


# --- bad files: each gives a specific error and never stops the good file --------------------------

BAD_FILES = [
    ("truncated.cif", nacl_cif()[:-20], ("truncated",)),
    ("cut_in_cell.cif", nacl_cif().split("_cell_length_c")[0] + "_cell_length_c", ("_cell_length_c", "truncated")),
    ("binary.cif", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", ("binary",)),
    ("empty.cif", "", ("empty",)),
    ("blank.vasp", "\n   \n", ("empty",)),
    ("no_atoms.cif", "data_x\n" + CELL.format(a="4", gamma="90"), ("no atoms",)),
    ("nan.cif", p1_cif("Na1 Na nan 0 0 1\nCl1 Cl 0.5 0.5 0.5 1\n"), ("NaN",)),
    ("nan.vasp", poscar(coords="0 0 0\nnan 0.5 0.5"), ("NaN",)),
    ("inf_cell.cif", p1_cif(NACL_ATOMS, a="inf"), ("NaN or infinite", "_cell_length_a")),
    ("flat.cif", nacl_cif(gamma="180"), ("degenerate",)),
    ("flat.vasp", poscar(vectors="5.64 0 0\n0 5.64 0\n5.64 5.64 0"), ("degenerate",)),
    ("unknown.cif", p1_cif("Xx1 Xx 0 0 0 1\nCl1 Cl 0.5 0.5 0.5 1\n"), ("unknown element", "Xx")),
    ("ghost.cif", p1_cif("Bq1 Bq 0 0 0 1\nCl1 Cl 0.5 0.5 0.5 1\n"), ("unknown element", "Bq")),
    ("unknown.vasp", poscar(species="Xx Cl"), ("unknown element", "Xx")),
    ("no_block.cif", "_cell_length_a 4.0\n_cell_length_b 4.0\n", ("data_",)),
    ("garbage.vasp", "hello\nworld\nthis is not\na poscar\n", ("POSCAR",)),
    ("vasp4.vasp", poscar().replace("Na Cl\n", "").replace("NaCl\n", "my crystal\n"), ("does not name its elements",)),
    ("left.vasp", poscar(vectors="-5.64 0 0\n0 5.64 0\n0 0 5.64"), ("negative volume", "left-handed")),
]


@pytest.mark.parametrize(("name", "content", "words"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_gives_clear_error_and_others_still_load(tmp_path, name, content, words):
    good = write(tmp_path, "good.cif", nacl_cif())
    bad = write(tmp_path, name, content)
    progress = []
    results = read_crystals([bad, good], progress=lambda *args: progress.append(args))
    assert [r.name for r in results] == [name, "good.cif"]
    assert_error(results[0], name, *words)
    assert results[1].ok and len(results[1].structure) == 8
    assert [p[:2] for p in progress] == [(1, 2), (2, 2)]


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "nowhere" / "ghost.cif"
    results = read_crystals([missing, write(tmp_path, "good.cif", nacl_cif())])
    assert results[0].source == str(missing) and "File not found" in results[0].error
    assert str(missing) in results[0].error
    assert results[1].ok
    assert "File not found" in read_one(missing).error


def test_file_above_size_limit_is_not_read(tmp_path):
    path = write(tmp_path, "big.cif", nacl_cif())
    entry = read_one(path, ReadLimits(max_file_bytes=100))
    assert_error(entry, "big.cif", "above the 100 bytes limit")

    huge = tmp_path / "huge.cif"
    with huge.open("wb") as f:  # sparse: never actually 25 MB on disk, and never read
        f.truncate(25_300_000)
    assert_error(read_one(huge), "is 25.3 MB, above the 20 MB limit")


def test_too_many_sites_counts_symmetry_expanded_cell(tmp_path):
    entry = read_one(write(tmp_path, "NaCl.cif", nacl_cif()), ReadLimits(max_sites=4))
    assert_error(entry, "8 sites", "limit of 4")


def test_partially_occupied_structure_is_returned_with_warning(tmp_path):
    atoms = "Na1 Na 0 0 0 0.5\nK1 K 0 0 0 0.5\nCl1 Cl 0.5 0.5 0.5 1\n"
    entry = read_one(write(tmp_path, "NaKCl.cif", nacl_cif(atoms=atoms)))
    assert entry.ok and not entry.structure.is_ordered
    assert "Partially occupied sites (disordered structure): 4 of 8 sites." in entry.warnings


def test_close_atoms_warning(tmp_path):
    entry = read_one(write(tmp_path, "close.cif", p1_cif("Na1 Na 0 0 0 1\nCl1 Cl 0.05 0 0 1\n")))
    assert entry.ok
    (warning,) = [w for w in entry.warnings if "closer than 0.5" in w]
    assert "0.20 Å" in warning


def test_warnings_are_short_and_unique(tmp_path):
    entry = read_one(write(tmp_path, "NaCl_sg.cif", nacl_cif(with_ops=False)))
    assert len(entry.warnings) == len(set(entry.warnings))
    assert all("\n" not in w and len(w) <= 240 for w in entry.warnings)


# --- batch behaviour ------------------------------------------------------------------------------

def test_progress_is_reported_in_order(tmp_path):
    paths = [write(tmp_path, f"{i}.cif", nacl_cif()) for i in range(3)]
    calls = []
    results = read_crystals(paths, progress=lambda done, total, message: calls.append((done, total, message)))
    assert all(r.ok for r in results)
    assert calls == [(1, 3, "Read 0.cif"), (2, 3, "Read 1.cif"), (3, 3, "Read 2.cif")]


def test_cancel_stops_between_files(tmp_path):
    paths = [write(tmp_path, f"{i}.cif", nacl_cif()) for i in range(3)]
    token = CancelToken()
    calls = []

    def progress(done, total, message):
        calls.append(done)
        token.cancel()  # the user presses Cancel while the first file is shown as done

    with pytest.raises(CancelledError):
        read_crystals(paths, progress=progress, cancel=token)
    assert calls == [1]


def test_the_quick_close_atom_test_never_misses_a_pair_the_neighbour_search_finds():
    from pymatgen.core import Lattice, Structure

    import numpy as np

    from app.engine.io.crystal_io import _may_have_close_atoms

    rng = np.random.default_rng(0)
    for _ in range(300):
        lengths = rng.uniform(0.8, 6.0, 3)
        angles = rng.uniform(40, 140, 3)
        try:
            lattice = Lattice.from_parameters(*lengths, *angles)
        except ValueError:
            continue
        if not np.isfinite(lattice.volume) or lattice.volume < 0.5:
            continue
        structure = Structure(lattice, ["Si"] * 4, rng.uniform(0, 1, (4, 3)))
        for r in (0.5, 1.0, 2.0):
            if len(structure.get_neighbor_list(r=r)[3]):
                assert _may_have_close_atoms(structure, r)
