"""What the worker sends the window must pickle: relaxed structures, candidates with their latent vectors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure


def test_a_relaxed_structure_pickles():
    pytest.importorskip("chgnet")
    from app.engine.stability.relax import relax_structures

    [result] = relax_structures([Structure(Lattice.cubic(4.3), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])],
                                device="cpu", max_steps=3)
    again = pickle.loads(pickle.dumps(result.structure))
    assert again.composition.reduced_formula == "CsCl"


def test_a_kept_candidate_payload_carries_its_latent_vector():
    from app.engine.generation.generator import Candidate
    from app.worker.jobs import _candidate_payload

    structure = Structure(Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    candidate = Candidate(3, structure, "CsCl", {}, {"decoded": True}, 0.7, kept=True, space_group="Pm-3m (221)",
                          latent=np.arange(8, dtype=np.float32))
    payload = pickle.loads(pickle.dumps(_candidate_payload(candidate)))
    assert np.array_equal(payload["latent"], np.arange(8, dtype=np.float32))
