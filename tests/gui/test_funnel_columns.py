"""Candidates after relaxation in the window: E_hull, decomposition, relaxed space group and
relaxation columns, the E_hull filter, the relaxed cell in the viewer, relaxed CIFs on export."""

from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from app.ui.records import candidate_record
from app.ui.results_model import COLUMN_INDEX


def payload(index, a, e_hull, state="relaxed", relaxed_a=None):
    structure = Structure(Lattice.cubic(a), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    relaxed = Structure(Lattice.cubic(relaxed_a), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]) if relaxed_a else None
    return {
        "index": index, "formula": "CsCl", "properties": {"formation_energy_per_atom": -2.0},
        "flags": {"decoded": True, "distance_ok": True, "bonds_ok": True, "unique": True, "relaxed": relaxed is not None,
                  "near_hull": e_hull is not None and e_hull <= 0.1, "structurally_novel": True},
        "latent_distance": 1.0, "kept": True, "error": None, "n_sites": 2,
        "structure": structure, "cif": str(CifWriter(structure)), "density": None, "space_group": "Pm-3m (221)",
        "relaxed_structure": relaxed, "relaxed_cif": str(CifWriter(relaxed)) if relaxed else None,
        "stability": {"e_above_hull": e_hull, "decomposition": "CsCl" if e_hull is not None else None,
                      "relaxed_space_group": "Pm-3m (221)" if relaxed else None, "relaxation_state": state,
                      "novelty": "novel"},
    }


def cell(window, row, key):
    model = window.results.filter
    return model.data(model.index(row, COLUMN_INDEX[key]))


def test_relaxed_candidates_show_filter_view_and_export(window, run, tmp_path):
    records = [candidate_record(payload(0, 4.0, 0.02, relaxed_a=4.2), "CsCl.cif"),
               candidate_record(payload(1, 4.1, 0.35, relaxed_a=4.3), "CsCl.cif"),
               candidate_record(payload(2, 4.2, None, state="relaxation failed: energy diverged"), "CsCl.cif")]
    window.model.add(records)
    assert window.results.filter.rowCount() == 3
    assert [cell(window, r, "e_above_hull") for r in range(3)] == ["0.020", "0.350", "—"]
    assert cell(window, 0, "decomposition") == "CsCl"
    assert cell(window, 0, "relaxed_space_group") == "Pm-3m (221)"
    assert cell(window, 2, "relaxation") == "relaxation failed: energy diverged"
    from PySide6.QtCore import Qt

    header = window.results.filter.headerData(COLUMN_INDEX["e_above_hull"], Qt.Orientation.Horizontal)
    assert "E_hull" in header

    window.results.max_e_above_hull.setValue(0.1)
    assert [r.index for r in window.results.filter.visible_records()] == [0]
    window.results.max_e_above_hull.setValue(window.results.max_e_above_hull.minimum())  # "any"
    assert window.results.filter.rowCount() == 3

    # The viewer shows the relaxed cell; the record's toggle switches to the decoded one.
    window.viewer.show_record(records[0])
    assert window.viewer.displayed_atoms is not None
    assert window.viewer._drawn_structure.lattice.a == 4.2
    records[0].show_unrelaxed = True
    window.viewer.refresh(records[0])
    assert window.viewer._drawn_structure.lattice.a == 4.0
    records[0].show_unrelaxed = False

    relaxed = run(window.controller.export(records[:1], tmp_path / "relaxed"))
    unrelaxed = run(window.controller.export(records[:1], tmp_path / "unrelaxed", relaxed=False))
    assert Structure.from_file(relaxed.cifs[0]).lattice.a == 4.2
    assert Structure.from_file(unrelaxed.cifs[0]).lattice.a == 4.0
    assert "e_above_hull" in relaxed.csv.read_text().splitlines()[0]
