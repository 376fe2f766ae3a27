"""Real-world structure files: every one gets a structure or a one-line reason, never a traceback.

The pile in ``tests/data/real_world`` holds small files of each kind users drag in (ASE-only
formats, SHELX, compressed files, CIF dialects, VASP 4 POSCARs, disorder) and, under
``broken/``, a broken variant of each kind.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
import shutil
import time
from pathlib import Path

import pytest

from app.engine.io import crystal_io
from app.engine.io.crystal_io import ReadLimits, read_crystal_file, read_crystals
from app.engine.io.time_limit import TimeLimitExceeded, call_with_time_limit

PILE = Path(__file__).parent / "data" / "real_world"

#: file -> (reduced formula of every entry, number of entries)
READABLE = {
    "NaCl.extxyz.xyz": ("NaCl", 1), "Si.cell": ("Si", 1), "Si.cell.bz2": ("Si", 1), "MgO.pwi": ("MgO", 1),
    "geometry.in": ("GaAs", 1), "Cu.lmp": ("Cu", 1), "Al_md.axsf": ("Al", 2), "Al_md.axsf.bz2": ("Al", 2),
    "KCl_shelx.ins": ("KCl", 1), "KCl_shelx.ins.gz": ("KCl", 1), "POSCAR.xz": ("NaCl", 1),
    "cartesian_only.cif": ("Al", 1), "placeholders.cif": ("CsCl", 1), "placeholders.cif.xz": ("CsCl", 1),
    "duplicated_special_positions.cif": ("CsCl", 1), "occupancy_rounding.cif": (None, 1),
    "misaligned_loop.cif": ("SrTiO3", 1), "misaligned_loop_gzipped.cif": ("SrTiO3", 1),
    "POSCAR_vasp4_comment": ("Fe2O3", 1), "vasp4_potcar/POSCAR": ("NaCl", 1),
    "mixed_occupancy_experimental.cif": (None, 1), "vacancies.cif": (None, 1), "pw_scf.in": ("MgO", 1),
    # samples from ASE's own test suite (its documented AIRSS .res and pw.x input examples)
    "airss_sample_from_ase.res": ("H30C97", 1), "qe_sample_from_ase.pwi": ("Fe3H", 1),
}
#: broken file -> words its one-line reason must contain
BROKEN = {
    "truncated.xyz": "extended XYZ", "molecule.xyz": "without a periodic cell", "no_positions.cell": "CASTEP",
    "no_positions.pwi": "ATOMIC_POSITIONS", "unsupported_ibrav.pwi": "ibrav = 13", "aims/geometry.in": "FHI-aims",
    "no_masses.lmp": "Masses", "truncated.axsf": "truncated", "no_cell.ins": "CELL", "bad_sfac.res": "SFAC",
    "truncated.cif.gz": "truncated", "POSCAR_corrupt.xz": "corrupt", "not_really.cif.bz2": "corrupt",
    "cartesian_without_cell.cif": "unit cell", "unknown_coordinates.cif": "'?' is not a number",
    "POSCAR_vasp4_unnamed": "does not name its elements", "misaligned_broken.cif": "loop_",
    "occupancy_far_over.cif": "more than 1",
}


@pytest.mark.parametrize("name", sorted(READABLE))
def test_each_readable_kind_gives_its_structures(name):
    formula, count = READABLE[name]
    entries = read_crystal_file(PILE / name)
    assert len(entries) == count
    for entry in entries:
        assert entry.ok, entry.error
        if formula is not None:
            assert entry.structure.composition.reduced_formula == formula
        assert all("\n" not in w for w in entry.warnings)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_broken_variant_gets_a_one_line_reason(name):
    [entry] = read_crystal_file(PILE / "broken" / name)
    assert entry.structure is None
    assert entry.error.startswith(Path(name).name + ": ")
    assert BROKEN[name] in entry.error and "\n" not in entry.error and "Traceback" not in entry.error


def test_every_file_of_the_pile_is_picked_up_from_its_folder():
    entries = read_crystals([PILE])
    names = {Path(e.source.split("#")[0]).relative_to(PILE).as_posix() for e in entries}
    expected = set(READABLE) | {f"broken/{n}" for n in BROKEN}
    assert expected <= names, expected - names


def test_frames_are_named_file_hash_number():
    entries = read_crystal_file(PILE / "Al_md.axsf")
    assert [e.name for e in entries] == ["Al_md.axsf#1", "Al_md.axsf#2"]
    assert entries[1].source.endswith("Al_md.axsf#2") and entries[1].block == "2"
    assert entries[0].structure.cart_coords[0][0] != entries[1].structure.cart_coords[0][0]


@pytest.mark.parametrize("suffix, pack", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)])
def test_every_compression_by_suffix_and_by_magic_bytes(tmp_path, suffix, pack):
    data = (PILE / "geometry.in").read_bytes()
    (tmp_path / f"geometry.in{suffix}").write_bytes(pack(data))
    (tmp_path / "renamed.in").write_bytes(pack(data))  # compressed, but the name does not say so
    for name in (f"geometry.in{suffix}", "renamed.in"):
        [entry] = read_crystal_file(tmp_path / name)
        assert entry.ok and entry.structure.composition.reduced_formula == "GaAs", entry.error


def test_cartesian_cif_matches_the_fractional_original():
    [entry] = read_crystal_file(PILE / "cartesian_only.cif")
    assert sorted(map(tuple, entry.structure.frac_coords.round(6).tolist())) == sorted(
        [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)])
    assert any("Cartesian" in w for w in entry.warnings)


def test_cartesian_cif_uses_its_transformation_matrix(tmp_path):
    text = (PILE / "cartesian_only.cif").read_text().replace(
        "loop_", "\n".join(f"_atom_sites_Cartn_tran_matrix_{i}{j} {4.05 if i == j else 0}"
                           for i in "123" for j in "123") + "\nloop_", 1)
    (tmp_path / "matrix.cif").write_text(text)
    [entry] = read_crystal_file(tmp_path / "matrix.cif")
    assert entry.ok and any("_atom_sites_Cartn_tran_matrix" in w for w in entry.warnings)


def test_quantum_espresso_ibrav_gives_the_right_cell():
    [entry] = read_crystal_file(PILE / "MgO.pwi")
    a = 7.96 * 0.529177210903
    assert entry.structure.volume == pytest.approx(a**3 / 4, rel=1e-6)  # fcc primitive cell


def test_shelx_special_position_occupancies_are_restored():
    [entry] = read_crystal_file(PILE / "KCl_shelx.ins")
    assert entry.structure.is_ordered and len(entry.structure) == 8  # 4 K + 4 Cl in the F-centred cell


def test_vasp4_elements_from_a_potcar_beside_it(tmp_path):
    shutil.copy(PILE / "vasp4_potcar" / "POSCAR", tmp_path / "POSCAR")
    [entry] = read_crystal_file(tmp_path / "POSCAR")
    assert entry.error and "does not name its elements" in entry.error  # no POTCAR here
    (tmp_path / "POTCAR.gz").write_bytes(gzip.compress((PILE / "vasp4_potcar" / "POTCAR").read_bytes()))
    [entry] = read_crystal_file(tmp_path / "POSCAR")
    assert entry.ok and entry.structure.composition.reduced_formula == "NaCl"
    assert any("POTCAR" in w for w in entry.warnings)


def test_duplicates_are_merged_and_placeholders_read_as_one():
    [dup] = read_crystal_file(PILE / "duplicated_special_positions.cif")
    assert dup.structure.is_ordered and len(dup.structure) == 2
    [placeholders] = read_crystal_file(PILE / "placeholders.cif")
    assert placeholders.structure.composition.reduced_formula == "CsCl"  # "." occupancy is not a missing Cl


def test_a_hanging_read_becomes_an_error_entry(monkeypatch):
    def hang(path, limits):
        time.sleep(30)

    monkeypatch.setattr(crystal_io, "_read_file", hang)
    started = time.monotonic()
    [entry] = read_crystal_file(PILE / "Si.cell", ReadLimits(max_seconds=0.5))
    assert time.monotonic() - started < 5
    assert entry.error and "longer than 0.5 s" in entry.error


def test_time_limit_also_works_outside_the_main_thread():
    import threading

    outcome = {}

    def worker():
        try:
            call_with_time_limit(lambda: time.sleep(5), 0.2)
        except TimeLimitExceeded:
            outcome["stopped"] = True
        outcome["value"] = call_with_time_limit(lambda: 42, 1.0)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert outcome == {"stopped": True, "value": 42}


def test_unexpected_failures_are_a_message_and_the_traceback_is_logged(monkeypatch, caplog):
    def boom(*args, **kwargs):
        raise RuntimeError("library bug")

    monkeypatch.setattr(crystal_io, "read_with_ase", boom)
    with caplog.at_level(logging.DEBUG, logger="app.engine.io.crystal_io"):
        [entry] = read_crystal_file(PILE / "Si.cell")
    assert entry.error == "Si.cell: could not be read (unexpected RuntimeError: library bug)."
    record = next(r for r in caplog.records if r.exc_info)
    assert record.levelno == logging.INFO  # not shown on the terminal unless -v


def test_cli_prints_no_traceback_and_keeps_it_in_the_log_file(monkeypatch, tmp_path, capsys, tiny_models):
    from app.cli import main
    from app.cli.logfile import LOG_FILE_NAME, log_folder

    def boom(*args, **kwargs):
        raise RuntimeError("library bug")

    monkeypatch.setattr(crystal_io, "read_with_ase", boom)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        status = main(["predict", str(PILE / "Si.cell")])
    finally:
        for handler in root.handlers[len(handlers):]:
            handler.close()
        root.handlers[:], root.level = handlers, level
    captured = capsys.readouterr()
    assert status == 1 and "Traceback" not in captured.err + captured.out
    assert json.loads(captured.out)[0]["error"].endswith("(unexpected RuntimeError: library bug).")
    log = (log_folder() / LOG_FILE_NAME).read_text()
    assert "Traceback" in log and "library bug" in log
