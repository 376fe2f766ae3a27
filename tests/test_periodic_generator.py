"""The periodic (all-crystal-system) generator: representation round trips on non-cubic
prototypes, the lattice head, a tiny random-weight model, and base acceptance in the generator."""

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from app.engine.core.errors import StructureReadError
from app.engine.generation.periodic_density import (GRID, MAX_SITES, encode, lattice_to_params, params_to_lattice,
                                                    standard_cell, structure_from_maps, structure_matches)
from app.engine.generation.periodic_model import (PLAUSIBLE_PERIODIC_LENGTH, PeriodicVAE, PeriodicVAEConfig,
                                                  decode_latent, decode_structures, encode_maps, one_hot_condition,
                                                  sample_prior)


def rutile():
    return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                     [[0, 0, 0], [0.3053, 0.3053, 0]])


def wurtzite():
    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.207), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.3825]])


def orthorhombic_perovskite():
    """CaTiO3, GdFeO3 type (Pnma, 20 sites)."""
    return Structure.from_spacegroup("Pnma", Lattice.orthorhombic(5.441, 7.644, 5.381), ["Ca", "Ti", "O", "O"],
                                     [[0.0065, 0.25, 0.9935], [0, 0, 0.5], [0.5711, 0.25, 0.0161],
                                      [0.2897, 0.0373, 0.7111]])


@pytest.mark.parametrize("make", [rutile, wurtzite, orthorhombic_perovskite])
def test_true_maps_decode_back_to_the_crystal(make):
    structure = make()
    maps = encode(structure)
    assert maps.density.shape == (GRID,) * 3 and maps.species.shape == (GRID,) * 3
    assert maps.density[0, 0, 0] == pytest.approx(maps.density.max(), rel=0.05)  # heaviest site at the origin
    decoded = structure_from_maps(maps.density, maps.species, maps.lattice)
    assert decoded is not None and len(decoded) == len(maps.structure)
    assert decoded.composition == maps.structure.composition
    assert structure_matches(decoded, structure)


def test_standard_cell_is_one_map_per_crystal():
    """A supercell and a shifted copy give the same standard cell and map."""
    structure = rutile()
    shifted = structure.copy()
    shifted.translate_sites(range(len(shifted)), [0.13, 0.29, 0.41])
    a, b = encode(structure), encode(shifted)
    assert len(a.structure) == len(rutile())
    np.testing.assert_allclose(a.lattice, b.lattice, atol=1e-5)
    np.testing.assert_allclose(a.density, b.density, atol=1e-3)
    supercell = structure.copy()
    supercell.make_supercell([2, 1, 1])
    assert len(standard_cell(supercell)) == len(structure)


def test_too_big_cell_is_refused_with_the_limit():
    big = Structure(Lattice.orthorhombic(9, 10, 11), ["Na"] * 12 + ["Cl"] * 12,
                    np.random.default_rng(0).uniform(0, 1, (24, 3)))
    with pytest.raises(StructureReadError, match=f"at most {MAX_SITES}"):
        standard_cell(big)


def test_lattice_params_round_trip():
    for lattice in (Lattice.from_parameters(3.1, 4.7, 8.2, 81.0, 97.0, 112.0), Lattice.hexagonal(3.2, 5.2),
                    Lattice.tetragonal(4.6, 3.0)):
        back = params_to_lattice(lattice_to_params(lattice))
        np.testing.assert_allclose(back.abc, lattice.abc, rtol=1e-5)
        np.testing.assert_allclose(back.angles, lattice.angles, atol=1e-3)
    # Any six numbers give a valid cell (the decoder's head is unconstrained).
    weird = params_to_lattice([1.0, 1.2, 1.5, 0.9, 0.9, -0.9])
    assert weird.volume > 0


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return PeriodicVAE(PeriodicVAEConfig(grid=GRID, latent_dim=8, widths=[4, 4, 8], species=[8, 22, 30],
                                         out_width=4))


def test_lattice_head_shape_and_gradients(tiny_model):
    maps = torch.randn(2, 5, GRID, GRID, GRID)
    condition = one_hot_condition(torch.tensor([1, 7]))
    features, density, lattice, mu, logvar = tiny_model(maps, condition)
    assert lattice.shape == (2, 6) and density.shape == (2, GRID, GRID, GRID)
    assert features.shape == (2, 4, GRID, GRID, GRID) and mu.shape == (2, 8)
    lattice.pow(2).sum().backward()
    assert tiny_model.lattice_head[0].weight.grad.abs().sum() > 0
    assert tiny_model.encoder[0][0].weight.grad.abs().sum() > 0  # the lattice loss reaches the encoder
    assert tiny_model.density_head.weight.grad is None or tiny_model.density_head.weight.grad.abs().sum() == 0
    # Destandardised output = standardised × std + mean.
    z = torch.zeros(1, 8)
    c = one_hot_condition(torch.tensor([0]))
    expected = tiny_model.lattice_standardised(z, c) * tiny_model.lattice_std + tiny_model.lattice_mean
    torch.testing.assert_close(tiny_model.lattice(z, c), expected)


def test_convolutions_are_periodic(tiny_model):
    """Rolling the input by whole encoder strides rolls the decoder features the same way."""
    tiny_model.eval()
    conv = tiny_model.encoder[0][0]
    x = torch.randn(1, 5, GRID, GRID, GRID)
    shifted = torch.roll(x, shifts=2, dims=2)
    torch.testing.assert_close(torch.roll(conv(x), shifts=1, dims=2), conv(shifted))


def test_tiny_model_encode_decode_sample(tiny_model):
    maps = encode(rutile())
    mu, logvar = encode_maps(tiny_model, maps.density[None], maps.species[None], [3])
    assert mu.shape == (1, 8) and logvar.shape == (1, 8)
    z = sample_prior(tiny_model, 3, [0, 1, 2], np.random.default_rng(0))
    density, species, lattice = decode_latent(tiny_model, z, [0, 1, 2])
    assert density.shape == (3, GRID, GRID, GRID) and lattice.shape == (3, 6)
    assert set(np.unique(species)) <= {8, 22, 30}
    decoded = decode_structures(tiny_model, z, [0, 1, 2])
    assert len(decoded) == 3
    for structure, decoded_density, error in decoded:
        assert decoded_density.shape == (GRID, GRID, GRID) and decoded_density.dtype == np.float32
        assert (structure is None) == (error is not None)


@pytest.fixture
def generator(tiny_models, tiny_model):
    from app.engine.generation.generator import CrystalGenerator, MissingHull
    from app.engine.generation.novelty import StructureIndex
    from app.engine.generation.voxel_models import ConditionalVAE3D, VAEConfig
    from app.engine.properties.predictor import PropertyPredictor

    torch.manual_seed(0)
    vae = ConditionalVAE3D(VAEConfig(latent_dim=8, widths=[4, 4, 8, 8], species=[11, 17], species_head_width=4))
    return CrystalGenerator(device="cpu", vae=vae, predictor=PropertyPredictor(device="cpu", folder=tiny_models),
                            structure_index=StructureIndex.from_structures([]), hull=MissingHull("none in tests"),
                            decile_edges=np.linspace(-3, 0, 9), periodic_vae=tiny_model,
                            periodic_decile_edges=np.linspace(-3, 0, 9), segmentation_workers=1)


def test_generator_takes_non_cubic_bases_and_refuses_big_ones(generator):
    from app.engine.generation.generator import CUBIC, PERIODIC
    from app.engine.generation.settings import GenerationSettings

    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert generator.model_for(nacl) == CUBIC
    srtio3 = Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"],
                                       [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]])
    assert generator.model_for(srtio3) == PERIODIC  # cubic, but the periodic model reconstructs perovskites better
    assert generator.model_for(rutile()) == PERIODIC
    assert generator.model_for(wurtzite()) == PERIODIC
    big = Structure(Lattice.orthorhombic(9, 10, 11), ["Na"] * 12 + ["Cl"] * 12,
                    np.random.default_rng(0).uniform(0, 1, (24, 3)))
    with pytest.raises(StructureReadError, match=f"at most {MAX_SITES}"):
        generator.model_for(big)
    settings = GenerationSettings(mode="around", count=4, sigma=0.5, seed=0, batch_size=4, require_novel=False,
                                  relax=False)
    result = generator.generate(settings, base=rutile())
    assert result.funnel["generated"] == 4 and len(result.candidates) == 4
    try:
        decoded = generator.reconstruct(wurtzite())
    except StructureReadError as error:  # random weights may decode no atom; the reason says so
        assert "decoded" in str(error)
    else:
        assert len(decoded) >= 1


def test_generator_without_periodic_model_keeps_the_cubic_refusal(generator):
    generator.periodic = None
    with pytest.raises(StructureReadError, match="cubic"):
        generator.model_for(rutile())


def test_learned_density_filter_starts_as_the_fixed_one_and_continues_fixed_weights(tmp_path):
    """Weights with the fixed filter continue as a learned-filter model with the same output."""
    from app.engine.core.registry import save_manifest_entry, sha256_of
    from app.engine.training.train_periodic_generator import NAME, load_shipped_into

    torch.manual_seed(0)
    config = dict(latent_dim=8, widths=[4, 4, 8], species=[8, 22], out_width=4)
    fixed = PeriodicVAE(PeriodicVAEConfig(**config)).eval()
    weights = tmp_path / f"{NAME}.pt"
    torch.save(fixed.state_dict(), weights)
    save_manifest_entry(NAME, {"file": weights.name, "sha256": sha256_of(weights), "kind": NAME,
                               "architecture": {**fixed.config.to_dict(), "decile_edges_eV_per_atom": [0.0] * 9}},
                        tmp_path)
    learned = PeriodicVAE(PeriodicVAEConfig(**config, learned_filter=True)).eval()
    load_shipped_into(learned, tmp_path)
    features = torch.randn(2, 4, GRID, GRID, GRID)
    torch.testing.assert_close(learned.density(features), fixed.density(features))
    assert learned.density_filter.weight.requires_grad
    other = PeriodicVAE(PeriodicVAEConfig(**{**config, "latent_dim": 16}, learned_filter=True))
    with pytest.raises(ValueError, match="another architecture"):
        load_shipped_into(other, tmp_path)


def test_fast_periodic_decoding_equals_full_species_maps(generator, tiny_model):
    """``decode_structures`` reads species only at the found sites; that must give the crystals
    that the full species maps (``decode_latent``) and ``structure_from_maps`` give, and the
    generator must decode through it. In smaller batches (float rounding of the convolutions
    differs) the same crystals come out."""
    with torch.no_grad():
        # Random weights give a nearly flat map: stretch it so that some maxima pass the threshold.
        tiny_model.density_head.weight *= 20.0
        tiny_model.density_head.bias.fill_(-2.3)
    z = 3.0 * np.random.default_rng(1).standard_normal((6, tiny_model.config.latent_dim)).astype(np.float32)
    fast = decode_structures(tiny_model, z, 2)
    density, species, lattice = decode_latent(tiny_model, z, np.full(len(z), 2))
    low, high = PLAUSIBLE_PERIODIC_LENGTH
    found = 0
    for (structure, decoded_density, error), d, s, params in zip(fast, density, species, lattice):
        np.testing.assert_allclose(decoded_density, d, atol=1e-6)
        lengths = np.exp(params[:3])
        if not np.all((lengths >= low) & (lengths <= high)):
            assert structure is None and "plausible range" in error
            continue
        reference = structure_from_maps(d, s, params)
        assert (structure is None) == (reference is None) == (error is not None)
        if structure is not None:
            found += 1
            assert [site.specie.Z for site in structure] == [site.specie.Z for site in reference]
            np.testing.assert_allclose(structure.frac_coords, reference.frac_coords, atol=1e-9)
            np.testing.assert_allclose(structure.lattice.matrix, reference.lattice.matrix, atol=1e-9)
    assert found > 0
    for (structure, decoded_density, error), (expected, expected_density, expected_error) in zip(
            generator._decode_periodic(z, 2), fast):
        np.testing.assert_array_equal(decoded_density, expected_density)
        assert error == expected_error and (structure is None) == (expected is None)
        if structure is not None:
            assert structure == expected
    for (structure, _, error), (expected, _, expected_error) in zip(decode_structures(tiny_model, z, 2, batch_size=4),
                                                                    fast):  # two batches, the second one short
        assert error == expected_error and (structure is None) == (expected is None)
        if structure is not None:
            assert [site.specie.Z for site in structure] == [site.specie.Z for site in expected]
            np.testing.assert_allclose(structure.frac_coords, expected.frac_coords, atol=1e-5)


@pytest.mark.parametrize("edge", [0.5, 100.0])
def test_implausible_decoded_cell_gives_no_crystal_and_says_why(generator, tiny_model, edge):
    """A lattice head that decodes an edge outside PLAUSIBLE_PERIODIC_LENGTH gives no crystal (no
    peak finding on it) and an error naming the edges and the range, in the product too."""
    with torch.no_grad():
        tiny_model.density_head.weight *= 20.0  # atoms would be found in a plausible cell
        tiny_model.density_head.bias.fill_(-2.3)
        last = tiny_model.lattice_head[-1]
        last.weight.zero_()
        # Standardised output so that a = edge Å, b = c = 5 Å and right angles.
        target = torch.tensor([np.log(edge), np.log(5.0), np.log(5.0), 0.0, 0.0, 0.0], dtype=torch.float32)
        last.bias.copy_((target - tiny_model.lattice_mean) / tiny_model.lattice_std)
    z = np.random.default_rng(2).standard_normal((3, tiny_model.config.latent_dim)).astype(np.float32)
    for decoded in (decode_structures(tiny_model, z, 4), generator._decode_periodic(z, 4)):
        assert len(decoded) == 3
        for structure, density, error in decoded:
            assert structure is None and density.shape == (GRID, GRID, GRID)
            assert f"{edge:.3g}" in error and "outside the plausible range 1–40 Å" in error


def test_uniqueness_matching_on_reduced_cells_equals_structure_matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from app.engine.generation.generator import CrystalGenerator

    rng = np.random.default_rng(0)
    base = rutile()
    shaken = base.copy()
    shaken.perturb(0.05, min_distance=0.0)
    strained = base.copy()
    strained.apply_strain([0.35, 0.0, 0.0])
    supercell = base.copy()
    supercell.make_supercell([1, 1, 2])
    moved = Structure(base.lattice, base.species, np.mod(base.frac_coords + rng.uniform(0, 0.3, (len(base), 3)), 1))
    matcher = StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10, scale=False)
    for other in (base, shaken, strained, supercell, moved):
        assert CrystalGenerator._matches(base, other) == matcher.fit(base, other)
