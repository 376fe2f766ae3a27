"""The worker's protocol, jobs and client, headless (no Qt): what the window relies on."""

import asyncio
import pickle
import sys
import subprocess
from types import SimpleNamespace

import pytest

from app.engine.core.cancel import CancelToken
from app.engine.core.paths import examples_dir
from app.engine.generation.settings import GenerationSettings
from app.worker import jobs, protocol
from app.worker.process import JobContext
from app.worker.protocol import JobRequest, Reply


def _context(models=None):
    sent: list[Reply] = []
    return JobContext(sent.append, 7, CancelToken(), models), sent


def test_requests_carry_the_settings_object_and_functions_by_reference():
    settings = GenerationSettings(mode="random", count=3, target_formation_energy=-1.0)
    request = JobRequest(1, jobs.generate, {"settings": settings})
    copy = pickle.loads(pickle.dumps(request))
    assert copy.function is jobs.generate and copy.kwargs["settings"] == settings
    assert isinstance(copy.kwargs["settings"], GenerationSettings)


def test_generate_passes_the_settings_on_and_streams_candidates_before_progress():
    from app.engine.generation.generator import Candidate

    received = {}

    class FakeGenerator:
        def generate(self, settings, base=None, second=None, progress=None, cancel=None, on_candidate=None):
            received["settings"] = settings
            for index in range(3):
                on_candidate(Candidate(index, None, None, {}, {"decoded": False}, 0.5, error="not decoded"))
                if index == 1:
                    progress(2, 3, "")
            return SimpleNamespace(funnel={"generated": 3}, sun=0, candidates=[])

    context, sent = _context(SimpleNamespace(generator=FakeGenerator()))
    settings = GenerationSettings(mode="random", count=3)
    result = jobs.generate(context, settings)
    assert received["settings"] is settings
    assert [r.kind for r in sent] == [protocol.ITEMS, protocol.PROGRESS, protocol.ITEMS]
    assert [len(r.payload) for r in sent if r.kind == protocol.ITEMS] == [2, 1]
    assert result["funnel"] == {"generated": 3}


def test_read_files_streams_entries_with_their_problems(tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a oops\n")
    example = sorted(examples_dir().glob("*.cif"))[0]
    context, sent = _context()
    entries = jobs.read_files(context, [str(example), str(bad)])
    assert [e["error"] is None for e in entries] == [True, False]
    assert entries[0]["structure"] is not None and entries[0]["formula"]
    assert "broken.cif" in entries[1]["source"] and entries[1]["error"]
    assert [e["source"] for r in sent if r.kind == protocol.ITEMS for e in r.payload] == [e["source"] for e in entries]


def test_the_worker_package_imports_without_qt():
    code = "import sys, app.worker.client, app.worker.jobs; print(any(m.startswith('PySide6') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_client_reads_and_predicts_in_a_worker_process(tiny_models):
    from app.worker.client import WorkerClient

    async def session():
        client = WorkerClient("cpu")
        client.start(asyncio.get_running_loop())
        try:
            models = await asyncio.wait_for(client.wait_models(), 120)
            example = sorted(examples_dir().glob("*.cif"))[0]
            predictions = await asyncio.wait_for(client.predict([str(example)]), 120)
            return models, predictions
        finally:
            await client.shutdown()

    models, predictions = asyncio.run(session())
    assert predictions and predictions[0]["error"] is None
    assert set(predictions[0]["properties"]) >= {"formation_energy_per_atom", "band_gap"}
    assert models.get("predictor_error") is None, models
