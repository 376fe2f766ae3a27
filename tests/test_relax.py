"""CHGNet relaxation: strained cells relax back, divergent ones are reported, nothing goes online."""

import json
import socket

import pytest
import numpy as np
from pymatgen.core import Composition, Lattice, Structure

from app.engine.stability.relax import COVALENT_FRACTION, covalent_distance_ok, min_covalent_ratio


def _perovskite(a: float) -> Structure:
    return Structure(Lattice.cubic(a), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])


class _NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        raise AssertionError("a socket was opened")


def test_covalent_rule_accepts_real_crystals_and_rejects_squeezed_ones(example):
    from app.engine.io.crystal_io import read_crystal_file

    for name in ("NaCl", "SrTiO3", "Si", "GaAs", "Fe"):
        structure = read_crystal_file(example(name))[0].structure
        assert covalent_distance_ok(structure), name
    squeezed = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.2, 0, 0]])  # 1.0 Å vs 2.68 Å radii sum
    assert min_covalent_ratio(squeezed) == pytest.approx(1.0 / (1.66 + 1.02), rel=0.05)
    assert not covalent_distance_ok(squeezed)
    assert covalent_distance_ok(squeezed, fraction=0.3)
    assert 0.5 <= COVALENT_FRACTION <= 0.7


@pytest.mark.integration
def test_strained_cell_relaxes_back_offline_and_divergent_one_is_reported(monkeypatch):
    from app.engine.stability.relax import relax_structures

    monkeypatch.setattr(socket, "socket", _NoSocket)
    collided = Structure(Lattice.cubic(3.0), ["Na", "Na"], [[0, 0, 0], [0.05, 0, 0]])
    calls = []
    strained, failed = relax_structures([_perovskite(3.905 * 1.06), collided], fmax=0.05, device="cpu",
                                        progress=lambda done, total, message="": calls.append((done, total)))
    assert strained.error is None and strained.converged
    assert strained.structure.lattice.a == pytest.approx(3.94, abs=0.05)  # CHGNet's SrTiO3 (PBE ~3.94 Å)
    assert strained.volume_change_percent < -10 and strained.max_force <= 0.05
    assert strained.space_group_after == "Pm-3m (221)" and strained.matches_unrelaxed
    assert strained.energy_per_atom < -7
    assert failed.structure is None and "collided" in failed.error
    assert calls and calls[-1] == (2, 2)


@pytest.mark.integration
def test_step_cap_far_from_converged_and_cancel():
    from app.engine.core.cancel import CancelToken
    from app.engine.core.errors import CancelledError
    from app.engine.stability.relax import relax_structures

    result, = relax_structures([_perovskite(3.905 * 1.15)], fmax=0.01, max_steps=2, device="cpu")
    assert result.error is not None and "step cap" in result.error
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        relax_structures([_perovskite(3.9)], device="cpu", cancel=token)


@pytest.mark.integration
def test_predict_relax_through_the_cli(tmp_path, capsys):
    from app.cli import main

    path = tmp_path / "SrTiO3_strained.cif"
    _perovskite(3.905 * 1.04).to(filename=str(path))
    assert main(["predict", "--relax", str(path), "--device", "cpu"]) == 0
    record, = json.loads(capsys.readouterr().out)
    assert record["relaxation"]["volume_change_percent"] < -5
    assert record["relaxation"]["space_group_after"] == "Pm-3m (221)"
    assert isinstance(record["e_above_hull"], float) and record["decomposition"]


@pytest.mark.integration
def test_one_backward_pass_gives_chgnets_own_forces_and_stress():
    import numpy as np

    from app.engine.stability.relax import energies_forces_stresses, load_chgnet

    model = load_chgnet("cpu")
    structures = [_perovskite(3.905 * 1.03), Structure(Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [.48, .5, .5]])]
    structures[0].perturb(0.05, seed=0)
    ours = energies_forces_stresses(model, structures)
    theirs = model.predict_structure(structures, task="efs", batch_size=8)
    for mine, reference in zip(ours, theirs):
        assert mine["e"] == pytest.approx(float(reference["e"]), abs=1e-5)
        np.testing.assert_allclose(mine["f"], reference["f"], atol=1e-4)
        np.testing.assert_allclose(mine["s"], reference["s"], atol=1e-3)  # GPa


@pytest.mark.integration
def test_fire_and_bfgs_reach_the_same_cell_and_unknown_optimizers_are_refused():
    from app.engine.stability.relax import relax_structures

    fire, = relax_structures([_perovskite(3.905 * 1.04)], fmax=0.05, device="cpu", optimizer="FIRE")
    bfgs, = relax_structures([_perovskite(3.905 * 1.04)], fmax=0.05, device="cpu", optimizer="BFGS")
    assert fire.converged and bfgs.converged
    assert fire.structure.lattice.a == pytest.approx(bfgs.structure.lattice.a, abs=0.01)
    with pytest.raises(ValueError, match="optimizer"):
        relax_structures([_perovskite(3.9)], device="cpu", optimizer="GPMin")


def test_chgnet_formation_energies_and_their_reasons():
    from app.engine.stability.formation import chgnet_corrections, chgnet_formation_energy, \
        element_reference_energies, mp2020_formation_energy

    mu = element_reference_energies()
    structure = _perovskite(3.94)
    energy = -8.42  # eV/atom, about CHGNet's SrTiO3
    formation, reason = chgnet_formation_energy(structure, energy, corrected=False)
    assert reason is None
    assert formation == pytest.approx(energy - (mu["Sr"] + mu["Ti"] + 3 * mu["O"]) / 5)
    # The shipped corrections add one offset per element, weighted by its atom fraction.
    offsets = chgnet_corrections()
    shifted, _ = chgnet_formation_energy(structure, energy)
    assert shifted == pytest.approx(formation + sum(offsets.get(s, 0.0) * n / 5 for s, n in
                                                    (("Sr", 1), ("Ti", 1), ("O", 3))))
    corrected, reason = mp2020_formation_energy(structure, energy)
    # MP2020's oxide correction (-0.687 eV per O atom) on 3 O of 5 atoms
    assert reason is None and corrected == pytest.approx(formation - 0.687 * 3 / 5, abs=0.01)
    odd = Structure(Lattice.cubic(4.0), ["Sr", "Xe"], [[0, 0, 0], [.5, .5, .5]])
    odd.replace_species({"Xe": "Og"})
    value, reason = chgnet_formation_energy(odd, -3.0)
    assert value is None and "Og" in reason


def test_correction_terms_separate_hubbard_metals_in_oxides_and_fluorides(tmp_path):
    import json

    from app.engine.stability.formation import chgnet_corrections, correction_features

    assert correction_features(Composition("Fe2O3")) == pytest.approx({"Fe+U": 0.4, "O": 0.6})
    assert correction_features(Composition("FeS")) == pytest.approx({"Fe": 0.5, "S": 0.5})
    assert correction_features(Composition("SrTiO3")) == pytest.approx({"Sr": 0.2, "Ti": 0.2, "O": 0.6})
    (tmp_path / "chgnet_corrections.json").write_text(json.dumps({"offsets_eV_per_atom": {"O": -0.1, "Fe+U": 0.5}}))
    assert chgnet_corrections(tmp_path) == {"O": -0.1, "Fe+U": 0.5}
    assert chgnet_corrections(tmp_path / "missing") == {}  # not installed: energies used as they are


def test_ridge_fit_recovers_offsets_and_shrinks_unseen_ones():
    from app.engine.stability.formation import correction_features
    from app.engine.training.element_references import _cross_validated_mae, _design, _ridge

    rng = np.random.default_rng(0)
    pool = ["SrTiO3", "TiO2", "SrO", "Fe2O3", "FeS", "SrS", "TiS2", "FeO", "Sr", "Ti"]
    compositions = [Composition(pool[i]) for i in rng.integers(0, len(pool), 200)]
    terms = sorted({t for c in compositions for t in correction_features(c)})
    truth = {t: c for t, c in zip(terms, np.linspace(-0.3, 0.3, len(terms)))}
    design = _design(compositions, terms)
    residual = design @ np.array([truth[t] for t in terms]) + 0.002 * rng.standard_normal(len(compositions))
    fitted = _ridge(design, residual, 1e-6)
    assert fitted == pytest.approx([truth[t] for t in terms], abs=0.01)
    assert _cross_validated_mae(design, residual, 1e-6) < 0.01 < _cross_validated_mae(design, residual, 10.0)


def test_cell_logarithms_remember_the_deformation_they_made_and_ask_scipy_otherwise():
    from scipy.linalg import expm, expm_frechet, logm

    from app.engine.stability.relax import _CellMatrixFunctions

    asked = []
    memo = _CellMatrixFunctions(lambda m: asked.append(m) or logm(m), expm, expm_frechet)
    rng = np.random.default_rng(0)
    made = memo.expm(0.05 * rng.standard_normal((3, 3)))
    for atoms in (1.0, 5.0, 12.0):  # ASE takes log(F) for forces, log(n_atoms · F) for positions
        np.testing.assert_allclose(memo.logm(atoms * made), logm(atoms * made).real, atol=1e-10)
    np.testing.assert_allclose(memo.logm(4 * np.eye(3)), np.log(4) * np.eye(3), atol=1e-12)  # the start
    assert not asked
    other = np.eye(3) + 0.1 * rng.standard_normal((3, 3))
    np.testing.assert_allclose(memo.logm(other), logm(other), atol=1e-12)
    assert len(asked) == 1


def test_cell_filter_derivatives_of_expm_come_from_one_batched_call():
    from scipy.linalg import expm, expm_frechet, logm

    from app.engine.stability.relax import _CellMatrixFunctions

    asked = []
    memo = _CellMatrixFunctions(logm, expm, lambda *a, **k: asked.append(a) or expm_frechet(*a, **k))
    log_deformation = 0.05 * np.random.default_rng(1).standard_normal((3, 3))
    for k in range(9):
        direction = np.zeros((3, 3))
        direction.flat[k] = 1.0
        np.testing.assert_allclose(memo.expm_frechet(log_deformation, direction, compute_expm=False),
                                   expm_frechet(log_deformation, direction, compute_expm=False), atol=1e-13)
    assert not asked
    memo.expm_frechet(log_deformation, np.full((3, 3), 0.5), compute_expm=False)  # not a unit direction
    assert len(asked) == 1
