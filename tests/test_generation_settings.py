"""The generation settings and the rules the window, worker, command line and generator share."""

import pickle
import sys
import subprocess

import pytest

from app.engine.core.errors import CrystalDesignerError
from app.engine.generation.settings import (FUNNEL_STAGE_KEYS, FUNNEL_STAGES, MODES, SIGMA_RANGE, GenerationSettings,
                                           decile_of, failed_stages, funnel_stage, in_window, in_windows)

EDGES = [-3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0]


def test_settings_are_checked_when_built_with_their_bounds_in_the_message():
    with pytest.raises(CrystalDesignerError, match="mode"):
        GenerationSettings(mode="sideways")
    with pytest.raises(CrystalDesignerError, match=f"between {SIGMA_RANGE[0]:g} and {SIGMA_RANGE[1]:g}"):
        GenerationSettings(sigma=SIGMA_RANGE[1] + 1)
    with pytest.raises(CrystalDesignerError, match="0 to 9"):
        GenerationSettings(decile=10)
    with pytest.raises(CrystalDesignerError, match="eV/atom"):
        GenerationSettings(target_formation_energy=float("nan"))
    with pytest.raises(CrystalDesignerError, match="not both"):
        GenerationSettings(decile=3, target_formation_energy=-1.0)
    with pytest.raises(CrystalDesignerError, match="samples"):
        GenerationSettings(count=0)
    assert GenerationSettings().problems() == []


def test_decile_rule_puts_an_energy_on_an_edge_in_the_lower_decile():
    assert decile_of(-3.5, EDGES) == 0
    assert decile_of(-3.0, EDGES) == 0
    assert decile_of(-2.9, EDGES) == 1
    assert decile_of(5.0, EDGES) == 9
    with pytest.raises(CrystalDesignerError, match="9 decile edges"):
        decile_of(0.0, EDGES[:5])


def test_condition_decile_prefers_the_choice_then_the_target_then_the_base():
    assert GenerationSettings(decile=7).condition_decile(EDGES, base_decile=2) == 7
    assert GenerationSettings(target_formation_energy=-1.2).condition_decile(EDGES, base_decile=2) == 4
    assert GenerationSettings().condition_decile(EDGES, base_decile=2) == 2
    assert GenerationSettings(mode="random").condition_decile(EDGES) == 0


def test_one_window_test_bounds_inclusive_unknown_values_fail():
    assert in_window(1.0, (1.0, 3.0)) and in_window(3.0, (1.0, 3.0)) and in_window(9.0, (1.0, None))
    assert not in_window(0.99, (1.0, None)) and not in_window(None, (None, None))
    assert in_windows({"band_gap": 2.0}, {})
    assert not in_windows({"band_gap": None}, {"band_gap": (None, 3.0)})


def test_stages_carry_their_wording_and_switch():
    assert FUNNEL_STAGE_KEYS[0] == "generated" and len(set(FUNNEL_STAGE_KEYS)) == len(FUNNEL_STAGES)
    for stage in FUNNEL_STAGES[1:]:
        assert stage.label and stage.rejection
        assert stage.switch is None or stage.switch in GenerationSettings.__dataclass_fields__
    settings = GenerationSettings(require_charge_balance=False)
    assert settings.removes("decoded") and not settings.removes("charge_balanced")
    assert not settings.removes("in_windows")
    assert GenerationSettings(property_windows={"band_gap": (1.0, None)}).removes("in_windows")
    flags = {"decoded": True, "distance_ok": False, "charge_balanced": False, "unique": False}
    assert [s.key for s in failed_stages(flags)] == ["distance_ok", "charge_balanced", "unique"]
    assert [s.key for s in failed_stages(flags, validity_only=True)] == ["distance_ok", "charge_balanced"]
    assert funnel_stage("unique").rejection == "duplicate"


def test_settings_travel_to_the_worker_whole():
    settings = GenerationSettings(mode=MODES[1], count=5, target_formation_energy=-1.0,
                                  property_windows={"band_gap": (1.0, None)})
    assert pickle.loads(pickle.dumps(settings)) == settings


def test_the_settings_module_is_light():
    code = ("import sys, app.engine.generation.settings; "
            "print(any(m in sys.modules for m in ('torch', 'pymatgen', 'numpy')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
