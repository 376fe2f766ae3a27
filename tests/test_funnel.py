"""The funnel's last stages (relaxed, near_hull, structurally_novel) and the S.U.N. count, with
tiny random networks, a fake relaxation and a fake hull."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from app.engine.core.errors import CrystalDesignerError
from app.engine.generation.assessment import assess
from app.engine.generation.generator import (FUNNEL_STAGE_KEYS, Candidate, CrystalGenerator, GenerationSettings, bonds_ok)
from app.engine.generation.novelty import StructureIndex
from app.engine.generation.voxel_models import ConditionalVAE3D, VAEConfig
from app.engine.properties.predictor import PropertyPredictor


@dataclass
class FakeRelaxation:
    structure: object
    error: str | None = None
    energy_per_atom: float = -5.0
    steps: int = 3
    max_force: float = 0.01
    volume_change_percent: float = 1.0
    rms_displacement: float = 0.01
    space_group_before: str = "?"
    space_group_after: str = "?"
    matches_unrelaxed: bool = True


@dataclass
class FakeHullResult:
    e_above_hull: float | None
    decomposition: str | None
    error: str | None = None


class FakeHull:
    """E_hull by reduced formula (eV/atom); None for unknown formulas."""

    def __init__(self, values):
        self.values = values

    def e_above_hull(self, composition, formation_energy_per_atom):
        value = self.values.get(composition.reduced_formula)
        return FakeHullResult(value, "NaCl" if value is not None else None,
                              None if value is not None else "no reference")


class FakeRelax:
    """Relaxes by rescaling the cell to ``scale``; fails for formulas in ``fail``."""

    def __init__(self, scale=1.02, fail=()):
        self.scale, self.fail, self.calls = scale, set(fail), []

    def __call__(self, structures, *, fmax, max_steps, device, progress=None, cancel=None):
        self.calls.append(len(structures))
        out = []
        for structure in structures:
            if structure.composition.reduced_formula in self.fail:
                out.append(FakeRelaxation(None, error="energy diverged"))
                continue
            relaxed = structure.copy()
            relaxed.scale_lattice(structure.volume * self.scale)
            out.append(FakeRelaxation(relaxed))
        return out


def rock_salt(a=5.64, cation="Na", anion="Cl"):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


def cscl_type(a=3.5, cation="Na", anion="Cl"):
    return Structure(Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]])


def candidate(index, structure, kept=True):
    return Candidate(index, structure, structure.composition.reduced_formula,
                     {"formation_energy_per_atom": -2.0}, {"decoded": True, "bonds_ok": True, "unique": True},
                     1.0, kept=kept)


class FakePredictor:
    def predict(self, structures):
        from types import SimpleNamespace

        return [SimpleNamespace(values={"formation_energy_per_atom": -2.1}) for _ in structures]


def run_assess(candidates, settings, relax=None, hull=None, base=None):
    funnel = {key: 0 for key in FUNNEL_STAGE_KEYS}
    index = StructureIndex.from_structures([("mp-22862", rock_salt())])
    sun = assess(candidates, funnel, settings, base=base, predictor=FakePredictor(), structure_index=index,
                 hull=hull or FakeHull({"NaCl": 0.02, "KCl": 0.3}), relax=relax or FakeRelax())
    return funnel, sun


def test_known_base_far_failed_and_duplicate_candidates_leave_the_funnel():
    base = cscl_type(3.3, "Na", "Br")
    cases = [
        candidate(0, rock_salt(5.5)),            # a known crystal (resized)
        candidate(1, cscl_type()),                # novel NaCl arrangement, near the hull
        candidate(2, cscl_type(3.55)),            # relaxes onto candidate 1: a duplicate
        candidate(3, cscl_type(3.6, "K")),        # novel but 0.3 eV/atom above the hull
        candidate(4, cscl_type(3.4, "Na", "Br")),  # the base
        candidate(5, cscl_type(3.4, "Li", "F")),  # relaxation fails
        candidate(6, cscl_type(3.3, "Na", "I"), kept=False),  # dropped earlier: not relaxed
    ]
    relax = FakeRelax(fail={"LiF"})
    funnel, sun = run_assess(cases, GenerationSettings(), relax=relax,
                             hull=FakeHull({"NaCl": 0.02, "KCl": 0.3, "NaBr": 0.0, "LiF": 0.0}), base=base)
    assert relax.calls == [6]
    assert [c.kept for c in cases] == [False, True, False, False, False, False, False]
    assert cases[0].novelty.label() == "known (mp-22862)"
    assert cases[4].novelty.label() == "the base"
    assert cases[2].flags["unique"] is False and cases[2].flags["structurally_novel"] is False
    assert cases[3].flags["near_hull"] is False and cases[3].e_above_hull == pytest.approx(0.3)
    assert cases[5].flags["relaxed"] is False and cases[5].rejection == "relaxation failed: energy diverged"
    assert cases[6].relaxation is None and cases[6].e_above_hull is None
    assert funnel["relaxed"] == 5 and funnel["near_hull"] == 4 and funnel["structurally_novel"] == 1
    assert sun == funnel["sun"] == 1
    # The relaxed cell, its predictions and its space group describe the candidate from now on.
    assert cases[1].relaxed_structure.volume == pytest.approx(cases[1].structure.volume * 1.02)
    assert cases[1].properties["formation_energy_per_atom"] == pytest.approx(-2.1)
    assert cases[1].unrelaxed_properties["formation_energy_per_atom"] == pytest.approx(-2.0)
    assert cases[1].space_group == "Pm-3m (221)"


def test_threshold_and_switched_off_filters():
    cases = [candidate(0, cscl_type(3.6, "K"))]
    funnel, sun = run_assess(cases, GenerationSettings(max_e_above_hull=0.5))
    assert cases[0].kept and funnel["near_hull"] == 1 and sun == 1
    cases = [candidate(0, cscl_type(3.6, "K")), candidate(1, rock_salt())]
    funnel, sun = run_assess(cases, GenerationSettings(require_near_hull=False, require_novel=False))
    assert [c.kept for c in cases] == [True, True] and sun == 0  # kept, but neither stable+novel


def test_without_relaxation_the_decoded_cells_are_judged():
    relax = FakeRelax()
    cases = [candidate(0, cscl_type())]
    funnel, sun = run_assess(cases, GenerationSettings(relax=False), relax=relax)
    assert relax.calls == [] and cases[0].relaxation is None and cases[0].flags["relaxed"] is False
    assert cases[0].kept and funnel["relaxed"] == 1 and sun == 1


def test_relax_all_relaxes_dropped_candidates_without_counting_them():
    relax = FakeRelax()
    cases = [candidate(0, cscl_type()), candidate(1, cscl_type(3.6, "K"), kept=False)]
    funnel, sun = run_assess(cases, GenerationSettings(relax_all=True), relax=relax)
    assert relax.calls == [2] and cases[1].relaxed_structure is not None and cases[1].e_above_hull == 0.3
    assert funnel["relaxed"] == 1 and sun == 1 and not cases[1].kept


def test_settings_check_the_new_thresholds():
    with pytest.raises(CrystalDesignerError, match="above-hull"):
        GenerationSettings(max_e_above_hull=-0.1)
    with pytest.raises(CrystalDesignerError, match="Relaxation"):
        GenerationSettings(relax_steps=0)


def test_covalent_rule_accepts_known_crystals_and_rejects_squashed_ones():
    assert bonds_ok(rock_salt()) and bonds_ok(cscl_type(4.12, "Cs"))
    # Na-Cl at 1.2 Å: above the 0.5 Å metric, but 0.46 of r(Na) + r(Cl) = 2.68 Å.
    squashed = Structure(Lattice.cubic(6.0), ["Na", "Cl"], [[0, 0, 0], [0.2, 0, 0]])
    assert not bonds_ok(squashed)


@pytest.fixture
def generator(tiny_models):
    torch.manual_seed(0)
    vae = ConditionalVAE3D(VAEConfig(latent_dim=8, widths=[4, 4, 8, 8], species=[11, 17], species_head_width=4))
    return CrystalGenerator(device="cpu", vae=vae, predictor=PropertyPredictor(device="cpu", folder=tiny_models),
                            decile_edges=np.linspace(-3, 0, 9), structure_index=StructureIndex.from_structures([]),
                            hull=FakeHull({}), relax=FakeRelax())


def test_generation_runs_every_stage_in_order(generator):
    settings = GenerationSettings(mode="around", count=8, seed=1, min_distance=0.0, require_charge_balance=False,
                                  require_near_hull=False)
    result = generator.generate(settings, base=rock_salt())
    counts = [result.funnel[key] for key in FUNNEL_STAGE_KEYS]
    assert [key for key in FUNNEL_STAGE_KEYS][-3:] == ["relaxed", "near_hull", "structurally_novel"]
    assert counts == sorted(counts, reverse=True) and counts[0] == 8
    assert result.sun == 0  # the fake hull knows no formula: nothing is near it
    for kept in result.kept:
        assert kept.relaxed_structure is not None and kept.hull_error == "no reference"


def test_ion_substitution_baseline_is_judged_like_the_generator(generator):
    from app.engine.training.evaluate_generator import evaluate_baseline, substitution_baseline

    base = Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    substituted = substitution_baseline(base, 6)
    formulas = [s.composition.reduced_formula for s in substituted]
    assert len(formulas) == 6 == len(set(formulas)) and "SrTiO3" not in formulas
    assert all(len(s) == 5 and s.lattice.abc == base.lattice.abc for s in substituted)
    generator._hull = FakeHull({formulas[0]: 0.0, formulas[1]: 0.5})
    summary = evaluate_baseline(generator, base, 6, GenerationSettings())
    assert summary["count"] == 6 and summary["relaxed_with_e_hull"] == 2
    assert summary["within_threshold"] == 0.5 and summary["novel"] == 6 and summary["sun"] == 1


def test_without_hull_or_relaxation_candidates_are_kept_with_the_reason(generator, monkeypatch):
    from app.engine.core.errors import ModelError

    def unavailable(self):
        raise ModelError("not in this installation")

    monkeypatch.setattr(CrystalGenerator, "hull", property(unavailable))
    monkeypatch.setattr(CrystalGenerator, "relax", property(unavailable))
    monkeypatch.setattr(CrystalGenerator, "decode_latents", lambda self, z, decile: [
        (cscl_type(3.4 + 0.01 * n), np.zeros((32, 32, 32), np.float32), None) for n in range(len(z))])
    result = generator.generate(GenerationSettings(mode="around", count=3, seed=1), base=rock_salt())
    assert result.funnel["unique"] == 1 and len(result.kept) == 1
    [kept] = result.kept
    assert kept.relaxation is None and kept.e_above_hull is None and kept.hull_error == "not in this installation"
    assert result.sun == 0
