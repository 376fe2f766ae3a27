"""The aggregate-posterior prior: fitting on clusters, sampling per condition, storage, the generator's random mode."""

import numpy as np
import pytest

from app.engine.core.errors import ModelError
from app.engine.generation.prior import LatentPrior, load_prior
from app.engine.training.fit_prior import fit_latent_prior

CENTRES = {0: np.array([[5.0, 0, 0, 0], [-5.0, 0, 0, 0]]), 1: np.array([[0, 8.0, 0, 0], [0, -8.0, 0, 0]])}


def synthetic_posteriors(rng, per_cluster=200, spread=0.1):
    """Posterior means in two tight clusters per condition class; posterior variances 0.01."""
    means, conditions = [], []
    for condition, centres in CENTRES.items():
        for centre in centres:
            means.append(centre + spread * rng.standard_normal((per_cluster, 4)))
            conditions += [condition] * per_cluster
    means = np.concatenate(means)
    return means, np.full_like(means, 0.01), np.array(conditions)


def nearest_centre_distance(samples, centres):
    return np.linalg.norm(samples[:, None, :] - centres[None], axis=2).min(axis=1)


@pytest.fixture
def fitted():
    means, variances, conditions = synthetic_posteriors(np.random.default_rng(0))
    return fit_latent_prior(means, variances, conditions, n_conditions=2, n_components=4, seed=0)


def test_samples_of_each_condition_lie_near_its_own_clusters(fitted):
    rng = np.random.default_rng(1)
    for condition, centres in CENTRES.items():
        samples = fitted.sample(500, rng, condition=condition)
        assert samples.shape == (500, 4)
        # Cluster spread 0.1, posterior std 0.1: samples stay within ~1 of a centre of their class…
        assert np.quantile(nearest_centre_distance(samples, centres), 0.99) < 1.0
        other = CENTRES[1 - condition]
        # …and far from the other class's clusters.
        assert nearest_centre_distance(samples, other).min() > 3.0
        # Both clusters of the class are sampled, about equally.
        sides = np.argmin(np.linalg.norm(samples[:, None, :] - centres[None], axis=2), axis=1)
        assert 0.35 < sides.mean() < 0.65


def test_component_widths_include_the_posterior_variance():
    means, _, conditions = synthetic_posteriors(np.random.default_rng(0), spread=0.0001)
    narrow = fit_latent_prior(means, None, conditions, 2, 2)
    wide = fit_latent_prior(means, np.full_like(means, 0.25), conditions, 2, 2)
    used = wide.weights > 0
    assert np.all(wide.scales[used] > 0.45) and np.all(narrow.scales[used] < 0.05)


def test_without_a_condition_classes_are_drawn_by_their_share(fitted):
    samples = fitted.sample(2000, np.random.default_rng(2))
    first_class = nearest_centre_distance(samples, CENTRES[0]) < nearest_centre_distance(samples, CENTRES[1])
    assert 0.45 < first_class.mean() < 0.55


def test_save_and_load_round_trip(fitted, tmp_path):
    path = tmp_path / "vae_prior.npz"
    fitted.save(path)
    loaded = LatentPrior.load(path)
    assert loaded.means.shape == fitted.means.shape and loaded.n_conditions == 2
    np.testing.assert_allclose(loaded.means, fitted.means, rtol=2e-3, atol=2e-3)  # stored as float16
    np.testing.assert_allclose(loaded.weights, fitted.weights, rtol=1e-5)
    a = fitted.sample(50, np.random.default_rng(3), condition=1)
    b = loaded.sample(50, np.random.default_rng(3), condition=1)
    np.testing.assert_allclose(a, b, atol=0.02)


def test_bad_input_is_refused_with_a_message(fitted, tmp_path):
    with pytest.raises(ModelError, match="condition classes 0-1"):
        fitted.sample(3, np.random.default_rng(0), condition=5)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="cannot be read"):
        LatentPrior.load(broken)
    means, variances, conditions = synthetic_posteriors(np.random.default_rng(0))
    with pytest.raises(ValueError, match="Condition class 2"):
        fit_latent_prior(means, variances, conditions, n_conditions=3)


def test_shipped_style_prior_is_found_through_the_manifest(fitted, tmp_path):
    from app.engine.core.registry import save_manifest_entry, sha256_of
    from app.engine.generation.prior import prior_path

    assert load_prior("toy_vae", tmp_path) is None  # none ships: the caller falls back to N(0, I)
    path = prior_path("toy_vae", tmp_path)
    fitted.save(path)
    save_manifest_entry("toy_vae", {"file": "toy_vae.pt", "sha256": "a" * 64, "kind": "density_vae"}, tmp_path)
    prior_entry = {"file": path.name, "sha256": sha256_of(path), "kind": "latent_prior",
                   "architecture": {"model": "toy_vae", "model_sha256": "a" * 64}}
    save_manifest_entry("toy_vae_prior", prior_entry, tmp_path)
    assert load_prior("toy_vae", tmp_path, latent_dim=4).latent_dim == 4
    with pytest.raises(ModelError, match="4 dimensions"):
        load_prior("toy_vae", tmp_path, latent_dim=8)


def test_a_prior_fitted_on_other_weights_is_not_used(fitted, tmp_path, caplog):
    from app.engine.core.registry import save_manifest_entry, sha256_of
    from app.engine.generation.prior import prior_path

    path = prior_path("toy_vae", tmp_path)
    fitted.save(path)
    save_manifest_entry("toy_vae", {"file": "toy_vae.pt", "sha256": "b" * 64, "kind": "density_vae"}, tmp_path)
    save_manifest_entry("toy_vae_prior", {"file": path.name, "sha256": sha256_of(path), "kind": "latent_prior",
                                          "architecture": {"model": "toy_vae", "model_sha256": "a" * 64}},
                        tmp_path)
    with caplog.at_level("WARNING"):
        assert load_prior("toy_vae", tmp_path, latent_dim=4) is None  # retrained model: N(0, I), said in the log
    assert "fitted on other toy_vae weights" in caplog.text


def test_random_mode_of_the_generator_draws_from_its_prior(tiny_models):
    import torch

    from app.engine.generation.generator import CrystalGenerator, GenerationSettings, MissingHull
    from app.engine.generation.voxel_models import ConditionalVAE3D, VAEConfig
    from app.engine.properties.predictor import PropertyPredictor

    torch.manual_seed(0)
    vae = ConditionalVAE3D(VAEConfig(latent_dim=4, widths=[4, 4, 8, 8], species=[11, 17], species_head_width=4))
    prior = LatentPrior(weights=np.ones((10, 1)), means=np.arange(10, dtype=float)[:, None, None] * np.ones((10, 1, 4)),
                        scales=np.full((10, 1, 4), 1e-3), condition_weights=np.ones(10))
    generator = CrystalGenerator(device="cpu", vae=vae, predictor=PropertyPredictor(device="cpu", folder=tiny_models),
                                 hull=MissingHull("none in tests"), decile_edges=np.linspace(-3, 0, 9), prior=prior)
    settings = GenerationSettings(mode="random", count=6, decile=7)
    latents = generator._latents(settings, np.random.default_rng(0), None, None, 7)
    np.testing.assert_allclose(latents, 7.0, atol=0.01)  # condition 7's only component
    plain = CrystalGenerator(device="cpu", vae=vae, predictor=generator.predictor, hull=generator.hull,
                             decile_edges=np.linspace(-3, 0, 9))
    assert plain.prior is None  # a VAE given by the caller gets no shipped prior


def test_screening_drops_components_whose_samples_decode_invalid(fitted):
    from app.engine.training.fit_prior import screen_components

    # "Valid" where the first latent coordinate is positive: condition 0's cluster at x = -5 goes,
    # condition 1 (clusters on the y axis, x ≈ 0) keeps some weight on both of its clusters.
    screened, summary = screen_components(fitted, lambda z, condition: z[:, 0] > 0, samples_per_component=4)
    samples = screened.sample(300, np.random.default_rng(4), condition=0)
    assert np.all(samples[:, 0] > 0)
    assert summary["components_dropped"] >= 1 and summary["samples_decoded"] > 0
    np.testing.assert_allclose(screened.weights.sum(axis=1), 1.0)


def test_temperature_narrows_the_components():
    means, variances, conditions = synthetic_posteriors(np.random.default_rng(0))
    full = fit_latent_prior(means, variances, conditions, 2, 2)
    half = fit_latent_prior(means, variances, conditions, 2, 2, temperature=0.5)
    np.testing.assert_allclose(half.scales, 0.5 * full.scales, rtol=1e-5)
