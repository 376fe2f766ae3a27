"""``crystal-designer --self-test`` with tiny random models (app.selftest)."""

import shutil

import pytest

from app.cli import main
from app.selftest import CHECKS, run_self_test


def _snapshot(*folders):
    return {path: (path.stat().st_size, path.stat().st_mtime_ns)
            for folder in folders for path in sorted(folder.rglob("*"))}


@pytest.fixture
def install_home(tiny_models, example, tmp_path, monkeypatch):
    """An install root holding only resources/examples (models come from CRYSTAL_DESIGNER_MODELS)."""
    home = tmp_path / "install"
    shutil.copytree(example("SrTiO3").parent, home / "resources" / "examples")
    monkeypatch.setenv("CRYSTAL_DESIGNER_HOME", str(home))
    return home


def test_self_test_passes_with_tiny_models_and_writes_nothing_to_the_install(install_home, tiny_models, capsys):
    before = _snapshot(install_home, tiny_models)
    status = main(["--self-test"])
    out = capsys.readouterr().out
    assert status == 0, out
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("  ")}
    assert lines == {name: "ok" for name in CHECKS}
    assert "funnel: generated 8" in out
    assert "self-test passed" in out
    assert _snapshot(install_home, tiny_models) == before


def test_tampered_weights_fail_the_self_test(install_home, tiny_models, capsys):
    weights = tiny_models / "band_gap.pt"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    status = run_self_test(checks=["install", "models", "predict"], device="cpu")
    out = capsys.readouterr().out
    assert status == 1
    models_line = next(line for line in out.splitlines() if line.startswith("  models"))
    assert "FAILED" in models_line and "band_gap" in models_line and "do not match the manifest" in models_line
    assert "FAILED" in next(line for line in out.splitlines() if line.startswith("  predict"))
    assert "self-test FAILED (models, predict)" in out


def test_a_model_missing_from_the_manifest_fails(install_home, tiny_models, capsys):
    import json

    manifest = tiny_models / "manifest.json"
    models = json.loads(manifest.read_text())
    del models["models"]["segmentation_unet"]
    manifest.write_text(json.dumps(models))
    assert run_self_test(checks=["models"]) == 1
    assert "not in the manifest: segmentation_unet" in capsys.readouterr().out


def test_missing_example_fails_and_commands_are_still_required(install_home, capsys):
    (install_home / "resources" / "examples" / "SrTiO3.cif").unlink()
    assert run_self_test(checks=["install"]) == 1
    assert "example structure missing" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([])
    with pytest.raises(ValueError):
        run_self_test(checks=["no-such-check"])
