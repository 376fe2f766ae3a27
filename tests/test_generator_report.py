"""The generator evaluation report: sections without the periodic model, and the text table."""

import numpy as np

from app.engine.training.evaluate_generator import (_deciles_cycled, evaluate_periodic, format_generator_report,
                                              populated_classes)


def test_samples_are_spread_over_the_deciles():
    assert _deciles_cycled(1000) == [(d, 100) for d in range(10)]
    assert sum(n for _, n in _deciles_cycled(25)) == 25 and _deciles_cycled(3) == [(0, 1), (1, 1), (2, 1)]


def test_without_a_periodic_model_its_sections_say_not_available(tmp_path):
    (tmp_path / "manifest.json").write_text('{"models": {}}')
    report = evaluate_periodic(folder=tmp_path)
    assert report == {"available": False, "reason": "no 'periodic_vae' model in the manifest"}
    text = format_generator_report({"periodic": report})
    assert "MP non-cubic: not available" in text and "around non-cubic bases" in text


def test_text_report_lists_every_section():
    sampling = {"count": 1000, "sampler": "aggregate-posterior prior", "structural_validity": 0.85,
                "compositional_validity": 0.9, "balanced_among_valid": 0.92}
    coverage = {"samples": 1000, "cutoffs": {"structure": 0.2, "composition": 4.0},
                "all_reference_cells": {"reference_count": 3787, "cov_recall": 0.5, "cov_precision": 0.6},
                "held_out_reference_cells": {"reference_count": 380, "cov_recall": 0.4, "cov_precision": 0.5}}
    periodic = {"available": True,
                "reconstruction": {"mp_non_cubic": {"cells": 10, "match_rate": 0.5, "lattice_length_mae_angstrom": 0.1,
                                                    "validity_rate": 0.9}},
                "random_samples": sampling,
                "around_base": {"tetragonal": {"base": "TiO2 (mp-2)", "structural_validity": 0.95},
                                "hexagonal": "no validation base of this system"},
                "perov_5_coverage": {"sampler": "mixture fitted to the perov_5 training posteriors",
                                     "coverage": {**coverage, "all_reference_cells": {
                                         "reference_count": 3787, "cov_recall": 0.71, "cov_precision": 0.83}}}}
    report = {"reconstruction": {"perov_5": {"count": 200, "match_rate": 0.68, "lattice_mae_angstrom": 0.036}},
              "random_samples": sampling, "coverage": coverage, "around_base": {"KBO3": {"validity": 0.845}},
              "periodic": periodic}
    text = format_generator_report(report)
    for expected in ("perov_5", "68.0 %", "mp_non_cubic", "COV-R 50.0 %", "COV-P 60.0 %", "73.9", "99.7",
                     "TiO2 (mp-2): 95.0 %", "no validation base", "KBO3: 84.5 %", "charge balanced 90.0 %",
                     "periodic_vae: 1000 samples vs 3787 all reference cells", "COV-R 71.0 %", "COV-P 83.0 %",
                     "perov_5 training posteriors"):
        assert expected in text, expected


def test_sparse_condition_classes_are_left_out_and_renumbered():
    conditions = np.array([0] * 25 + [1] * 3 + [3] * 20)
    used, keep, compact = populated_classes(conditions, 4, min_cells=20)
    assert used.tolist() == [0, 3]
    assert keep.sum() == 45 and not keep[25:28].any()
    assert compact.tolist() == [0] * 25 + [1] * 20
