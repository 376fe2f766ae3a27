"""The latent map plot: training cells coloured by formation energy, the base and candidates on top."""

from __future__ import annotations

import numpy as np
from gui_support import kept_candidate_payload, requires_display, wait_until
from test_plots import _drawn_pixels, _exports

pytestmark = requires_display


def write_tiny_latent_map(folder, n_cells: int = 40) -> None:
    """A latent map for the tiny density_vae (8 latent dimensions) in the tiny models folder."""
    from app.engine.core.registry import save_manifest_entry, sha256_of
    from app.engine.generation.latent_map import LATENT_MAP_FILE, LATENT_MAP_NAME, STRUCTURE_CLASSES
    from app.engine.training.latent_map import fit_pca

    rng = np.random.default_rng(0)
    latents = rng.normal(size=(n_cells, 8))
    mean, components, explained = fit_pca(latents)
    np.savez_compressed(folder / LATENT_MAP_FILE, points=((latents - mean) @ components.T).astype(np.float32),
                        formation_energy=rng.uniform(-3, 0, n_cells).astype(np.float32),
                        validation=np.arange(n_cells) % 10 == 0, structure_class=np.zeros(n_cells, np.uint8),
                        pca_mean=mean, pca_components=components, explained_variance=explained,
                        class_names=np.array(STRUCTURE_CLASSES),
                        vae_sha256=np.array(sha256_of(folder / "density_vae.pt")))
    save_manifest_entry(LATENT_MAP_NAME, {"file": LATENT_MAP_FILE, "sha256": sha256_of(folder / LATENT_MAP_FILE),
                                          "kind": LATENT_MAP_NAME, "created": "test"}, folder)


def test_pca_axes_are_orthonormal_and_ordered():
    from app.engine.training.latent_map import fit_pca

    rng = np.random.default_rng(1)
    latents = rng.normal(size=(500, 6)) * np.array([5.0, 3.0, 1.0, 1.0, 1.0, 1.0])
    mean, components, explained = fit_pca(latents)
    assert np.allclose(components @ components.T, np.eye(2), atol=1e-9)
    assert explained[0] > explained[1] > 0.1
    assert abs(abs(components[0, 0]) - 1) < 0.05  # the widest axis first


def test_latent_map_shows_training_cells_base_and_candidates(tiny_models, window, run, example, tmp_path):
    from app.ui.records import candidate_record

    write_tiny_latent_map(tiny_models)
    [base] = run(window.open_paths([example("NaCl")]))
    window.library.select([base])
    candidates = [candidate_record(kept_candidate_payload(base.structure, index=i), "NaCl.cif") for i in range(3)]
    for offset, candidate in enumerate(candidates):
        candidate.latent = np.full(8, 0.1 * offset, dtype=np.float32)
    candidates[2].kept = False  # relaxed, then found far from the hull: still on the map, crossed
    window.model.add(candidates)
    plot = window.plots.show_latent_map()
    run(wait_until(lambda: plot.task.done(), timeout=60, message="latent map"))
    plot.task.result()
    kinds = plot.table["kind"]
    assert kinds.count("training cell") + kinds.count("validation cell") == 40
    assert kinds.count("candidate") == 2 and kinds.count("base") == 1
    assert kinds.count("candidate (rejected in the last stages)") == 1
    assert plot.table["name"][kinds.index("base")] == base.name
    assert plot.message.text() == ""  # the map fits this encoder; every candidate has its latent
    assert _drawn_pixels(plot) > 0.02
    _exports(plot, tmp_path, rows=44)
    plot.close()
    # A candidate of the periodic generator (another latent space) is left off the map, with a note.
    periodic = candidate_record(kept_candidate_payload(base.structure, index=9), "NaCl.cif")
    periodic.latent = np.zeros(5, dtype=np.float32)
    window.model.add([periodic])
    plot = window.plots.show_latent_map()
    run(wait_until(lambda: plot.task.done(), timeout=60, message="latent map"))
    plot.task.result()
    assert plot.table["kind"].count("candidate") == 2
    assert "1 candidate of the periodic generator is not shown" in plot.message.text()
    plot.close()


def test_latent_map_missing_is_said(window, run):
    plot = window.plots.show_latent_map()
    run(wait_until(lambda: plot.task.done(), timeout=60, message="latent map"))
    assert "No latent map" in plot.message.text()
    plot.close()
