"""Generation pipeline with tiny random networks: settings, funnel, determinism, cancel."""

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from app.engine.core.cancel import CancelToken
from app.engine.core.errors import CancelledError, CrystalDesignerError
from app.engine.generation.generator import (FUNNEL_STAGE_KEYS, CrystalGenerator, GenerationSettings, charge_balanced,
                                  minimum_distance_ok)
from app.engine.properties.predictor import PropertyPredictor
from app.engine.generation.voxel_models import ConditionalVAE3D, VAEConfig
from app.engine.generation.generator import MissingHull
from app.engine.generation.novelty import StructureIndex


class KnownPairs:
    def __init__(self, pairs=()):
        self.pairs = set(pairs)

    def known(self, formula, space_group):
        return (formula, space_group) in self.pairs


def unchanged_relaxation(structures, **_options):
    from types import SimpleNamespace

    return [SimpleNamespace(structure=s, error=None) for s in structures]


def nacl(a=5.64):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture
def generator(tiny_models):
    torch.manual_seed(0)
    vae = ConditionalVAE3D(VAEConfig(latent_dim=8, widths=[4, 4, 8, 8], species=[11, 17], species_head_width=4))
    return CrystalGenerator(device="cpu", vae=vae,
                            predictor=PropertyPredictor(device="cpu", folder=tiny_models),
                            structure_index=StructureIndex.from_structures([("mp-22862", nacl())]),
                            hull=MissingHull("no reference hull in these tests"), relax=unchanged_relaxation,
                            decile_edges=np.linspace(-3, 0, 9))


def test_settings_are_checked_with_readable_messages():
    with pytest.raises(CrystalDesignerError, match="mode"):
        GenerationSettings(mode="sideways").validate()
    with pytest.raises(CrystalDesignerError, match="decile"):
        GenerationSettings(decile=12).validate()
    with pytest.raises(CrystalDesignerError, match="minimum above its maximum"):
        GenerationSettings(property_windows={"band_gap": (3.0, 1.0)}).validate()
    with pytest.raises(CrystalDesignerError, match="Unknown property"):
        GenerationSettings(property_windows={"colour": (0, 1)}).validate()


def test_filters_on_known_structures():
    assert minimum_distance_ok(nacl(), 0.5)
    squashed = Structure(Lattice.cubic(4.0), ["Na", "Na"], [[0, 0, 0], [0.05, 0, 0]])
    assert not minimum_distance_ok(squashed, 0.5)
    # A single atom in a tiny cell is too close to its own periodic image.
    assert not minimum_distance_ok(Structure(Lattice.cubic(0.4), ["Fe"], [[0, 0, 0]]), 0.5)
    assert charge_balanced("NaCl") and charge_balanced("SrTiO3") and charge_balanced("Cu2MnAl")
    assert not charge_balanced("NaCl2")


def test_judge_counts_a_funnel_in_order(generator):
    settings = GenerationSettings(require_same_formula=True, property_windows={"bulk_modulus": (0, None)})
    funnel = {key: 0 for key in FUNNEL_STAGE_KEYS}
    kept = {}
    prediction = generator.predictor.predict([nacl()])[0]
    cases = [
        (nacl(), "NaCl"),  # known, but structural novelty is judged later (test_funnel.py)
        (Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.5), ["Na", "Cl"], [[0, 0, 0], [.5, .5, .5]]), "novel"),
        (Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.5), ["Na", "Cl"], [[0, 0, 0], [.5, .5, .5]]), "duplicate"),
        (Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]]), "too close"),
        (Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.5), ["K", "Cl"], [[0, 0, 0], [.5, .5, .5]]), "other formula"),
    ]
    results = [generator._judge(i, s, np.zeros((32, 32, 32)), None, prediction, settings, "NaCl", 1.0, kept, funnel)
               for i, (s, _) in enumerate(cases)]
    assert [r.kept for r in results] == [True, True, False, False, False]
    assert results[2].flags["unique"] is False
    assert results[3].flags["distance_ok"] is False
    assert results[4].flags["same_formula"] is False
    counts = [funnel[key] for key in FUNNEL_STAGE_KEYS]
    assert counts == sorted(counts, reverse=True)
    assert funnel["generated"] == 5 and funnel["unique"] == 2
    assert results[1].density is not None and results[2].density is None


def test_generation_is_seeded_and_reports_progress(generator):
    settings = GenerationSettings(mode="around", count=6, batch_size=4, seed=7, require_novel=False)
    seen = []
    first = generator.generate(settings, base=nacl(), progress=lambda d, t, m="": seen.append((d, t)))
    second = generator.generate(settings, base=nacl())
    assert seen == [(4, 6), (6, 6)]
    assert len(first.candidates) == 6 and first.funnel["generated"] == 6
    assert [c.formula for c in first.candidates] == [c.formula for c in second.candidates]
    assert [c.latent_distance for c in first.candidates] == pytest.approx([c.latent_distance for c in second.candidates])
    other = generator.generate(GenerationSettings(mode="around", count=6, seed=8), base=nacl())
    assert [c.latent_distance for c in other.candidates] != pytest.approx([c.latent_distance for c in first.candidates])


def test_cancel_stops_between_batches(generator):
    token = CancelToken()
    done = []

    def progress(d, t, m=""):
        done.append(d)
        token.cancel()

    with pytest.raises(CancelledError):
        generator.generate(GenerationSettings(mode="random", count=20, batch_size=4), progress=progress, cancel=token)
    assert done == [4]


def test_modes_need_their_structures(generator):
    with pytest.raises(CrystalDesignerError, match="base"):
        generator.generate(GenerationSettings(mode="around", count=2))
    with pytest.raises(CrystalDesignerError, match="second"):
        generator.generate(GenerationSettings(mode="interpolate", count=2), base=nacl())


def test_non_cubic_base_is_refused_clearly(generator):
    from app.engine.core.errors import StructureReadError

    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [.3, .3, 0]])
    with pytest.raises(StructureReadError, match="cubic"):
        generator.generate(GenerationSettings(mode="around", count=2), base=rutile)


def test_reconstruction_metrics_are_computed_per_structure(generator):
    from app.engine.training.evaluate_generator import evaluate_reconstruction, evaluate_sampling

    cscl = Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [.5, .5, .5]])
    report = evaluate_reconstruction(generator, [nacl(), cscl])
    assert report["count"] == 2
    assert 0.0 <= report["match_rate"] <= 1.0
    assert report["mean_abs_delta_sites"] is not None
    sampling = evaluate_sampling(generator, count=10)
    assert sampling["count"] == 10
    assert 0.0 <= sampling["structural_validity"] <= sampling["decoded"] <= 1.0


def test_parallel_segmentation_gives_the_same_crystals(tiny_models, monkeypatch):
    import app.engine.generation.generator as generator_module
    from app.engine.generation.density import encode

    torch.manual_seed(0)
    vae = ConditionalVAE3D(VAEConfig(latent_dim=8, widths=[4, 4, 8, 8], species=[11, 17], species_head_width=4))
    parallel = CrystalGenerator(device="cpu", vae=vae, predictor=PropertyPredictor(device="cpu", folder=tiny_models),
                                training_index=KnownPairs(), decile_edges=np.linspace(-3, 0, 9),
                                segmentation_workers=2)
    # True maps of rock salt and CsCl stand in for decoded maps: both must come back whole.
    maps = [encode(nacl()), encode(Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.12), ["Na", "Cl"],
                                                              [[0, 0, 0], [.5, .5, .5]]))]
    jobs = [(m.density, m.species, float(m.lattice_abc[0])) for m in maps] * 9
    monkeypatch.setattr(generator_module, "PARALLEL_MIN_MAPS", 4)
    try:
        together = parallel._segment_all(jobs)
        assert parallel._pool is not None
    finally:
        parallel.close()
    alone = [generator_module._segment(job) for job in jobs]
    assert [len(s) for s, _ in together] == [len(s) for s, _ in alone] == [8, 2] * 9
    assert all(a.matches(b) for (a, _), (b, _) in zip(together, alone))
