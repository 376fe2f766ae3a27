"""Export: safe names, no silent overwrite, exported CIFs re-read to the same structures."""

import csv
import json

from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from app.engine.io.crystal_io import read_crystal_file
from app.engine.io.export import export_structures, safe_filename


def test_safe_filename_whatever_the_formula():
    assert safe_filename("SrTiO3") == "SrTiO3"
    assert safe_filename("a/b\\c:d*e?") == "a_b_c_d_e"
    assert safe_filename("../../etc/passwd") == "etc_passwd"
    assert safe_filename("") == "crystal"
    assert safe_filename("CON") == "_CON"
    assert len(safe_filename("X" * 500)) <= 80


def test_export_round_trip_and_no_overwrite(tmp_path):
    structures = [
        Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"], [[0, 0, 0], [.5, .5, .5], [.5, .5, 0]]),
        Structure(Lattice.orthorhombic(3.1, 4.2, 5.3), ["Na", "Cl"], [[0.1, 0.2, 0.3], [0.6, 0.7, 0.8]]),
    ]
    rows = [{"structure": s, "name": "Sr/TiO3", "formula": s.composition.reduced_formula, "band_gap": 1.5,
             "refractive_index": None} for s in structures]
    first = export_structures(rows, tmp_path / "out")
    second = export_structures(rows, tmp_path / "out")
    names = {p.name for p in first["cifs"]} | {p.name for p in second["cifs"]}
    assert len(names) == 4  # nothing overwritten
    assert first["csv"] != second["csv"]
    matcher = StructureMatcher(scale=False)
    for original, path in zip(structures, first["cifs"]):
        [loaded] = read_crystal_file(path)
        assert loaded.ok and matcher.fit(original, loaded.structure)
    with open(first["csv"]) as handle:
        table = list(csv.DictReader(handle))
    assert table[0]["formula"] == "SrTiO3" and table[0]["band_gap"] == "1.5" and table[0]["refractive_index"] == ""
    assert json.loads(first["json"].read_text())[1]["formula"] == "NaCl"
