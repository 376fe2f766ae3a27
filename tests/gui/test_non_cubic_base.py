"""The Generate panel takes a non-cubic base end to end (periodic generator, tiny random weights)."""

from __future__ import annotations

from gui_support import requires_display, wait_until

pytestmark = requires_display


def _add_tiny_periodic_vae(folder) -> None:
    import torch

    from app.engine.core.registry import save_manifest_entry, sha256_of
    from app.engine.generation.periodic_density import GRID
    from app.engine.generation.periodic_model import PeriodicVAE, PeriodicVAEConfig

    torch.manual_seed(0)
    config = PeriodicVAEConfig(grid=GRID, latent_dim=8, widths=[4, 4, 8], species=[8, 22, 30], out_width=4)
    path = folder / "periodic_vae.pt"
    torch.save(PeriodicVAE(config).state_dict(), path)
    save_manifest_entry("periodic_vae", {
        "file": path.name, "sha256": sha256_of(path), "kind": "periodic_vae", "created": "test",
        "architecture": {**config.to_dict(), "decile_edges_eV_per_atom": [-3 + 0.3 * i for i in range(9)]}}, folder)


def test_generate_around_a_tetragonal_base(tiny_models, make_window, run, example):
    _add_tiny_periodic_vae(tiny_models)
    window = make_window()
    run(window.client.wait_models(), timeout=120)
    errors, notes = [], []
    window.controller.error_reported.connect(lambda title, message: errors.append(f"{title}: {message}"))
    window.controller.generation_finished.connect(lambda funnel, note: notes.append(note))
    records = run(window.open_paths([example("TiO2_rutile")]))
    window.library.select(records)
    panel = window.generate_panel
    assert panel.base is records[0]
    panel.count.setValue(16)
    run(wait_until(panel.generate_button.isEnabled, message="Generate enabled"))
    panel.generate_button.click()
    run(wait_until(lambda: window.controller.generating, timeout=5, message="generation started"))
    run(wait_until(lambda: not window.controller.generating, timeout=180, message="generation finished"))
    assert not errors, errors
    candidates = [r for r in window.model.records if r.is_candidate]
    assert len(candidates) == 16  # every sample is a row (random weights: kept or rejected with a reason)
    assert all(c.kept or c.rejection() for c in candidates)
    funnel = {panel.funnel.topLevelItem(i).text(0): panel.funnel.topLevelItem(i).text(1)
              for i in range(panel.funnel.topLevelItemCount())}
    assert funnel["Generated"] == "16"
    assert notes and "cubic" not in notes[-1].lower(), notes
