"""Screening campaigns on a real Dask scheduler and two worker processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
N_PER_BASE, CHUNK = 12, 3


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not happen within {timeout} s")


@pytest.fixture
def cluster(tmp_path, tiny_models):
    """``dask scheduler`` and two ``dask worker`` processes (no nanny: a kill is a real loss) that
    see the tiny models through CRYSTAL_DESIGNER_MODELS."""
    env = {**os.environ, "CRYSTAL_DESIGNER_MODELS": str(tiny_models), "OMP_NUM_THREADS": "1"}
    scheduler_file = tmp_path / "scheduler.json"
    processes = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                   "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                                  env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        address = _wait_for(lambda: scheduler_file.exists() and json.loads(scheduler_file.read_text())["address"],
                            30, "scheduler start")
        workers = [subprocess.Popen([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny",
                                     "--no-dashboard", "--host", "127.0.0.1"],
                                    env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(2)]
        processes += workers
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=30)
        yield address, workers, env
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _screen(args, env, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "app.cli", "screen", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_campaign_survives_a_killed_worker_reports_a_bad_base_and_resumes(cluster, tmp_path, example):
    import pyarrow.parquet as pq

    address, workers, env = cluster
    bad = tmp_path / "broken.cif"
    bad.write_text("data_broken\n_cell_length_a 3.9\n")
    out = tmp_path / "campaign"
    args = ["--base", str(example("SrTiO3")), "--base", str(bad), "--base", str(example("NaCl")),
            "--n-per-base", str(N_PER_BASE), "--chunk", str(CHUNK), "--seed", "3", "--no-relax",
            "--scheduler", address, "--out", str(out)]
    run = _screen(args, env)
    # Kill a worker as soon as the first chunk is written: its running and queued chunks move.
    _wait_for(lambda: list((out / "chunks").glob("*.json")) if (out / "chunks").exists() else None, 60,
              "a first chunk")
    workers[0].send_signal(signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=90)
    assert run.returncode == 1, stderr  # 1: a base was bad; the others ran
    report = json.loads(stdout)
    assert list(report["base_errors"]) == [str(bad)]
    assert report["funnel"]["generated"] == report["samples"] == 2 * N_PER_BASE
    assert report["tasks"] == 2 * (N_PER_BASE // CHUNK)
    table = pq.read_table(report["candidates_dir"]).to_pylist()
    assert sorted((r["base_index"], r["sample"]) for r in table) == [
        (b, s) for b in range(2) for s in range(N_PER_BASE)]  # every sample exactly once
    assert sum(r["kept"] for r in table) == report["kept"]

    began = time.monotonic()
    again = _screen([*args, "--resume"], env)
    stdout, stderr = again.communicate(timeout=60)
    second = json.loads(stdout)
    assert second["reused_tasks"] == second["tasks"] == report["tasks"], stderr
    assert second["funnel"] == report["funnel"] and second["kept"] == report["kept"]
    assert time.monotonic() - began < 30

    from app.engine.campaign.runtime import run_campaign
    from app.engine.core.errors import CrystalDesignerError
    from app.engine.generation.settings import GenerationSettings

    with pytest.raises(CrystalDesignerError, match="--resume"):  # refused before any cluster starts
        run_campaign([str(example("NaCl"))], N_PER_BASE, GenerationSettings(relax=False), out)


def test_chunks_have_independent_reproducible_seeds(tmp_path):
    from app.engine.campaign.runtime import plan_tasks
    from app.engine.generation.settings import GenerationSettings

    tasks = plan_tasks(["a.cif", "b.cif"], 10, GenerationSettings(), 7, tmp_path, chunk=4)
    assert [(t.base_index, t.first_sample, t.count) for t in tasks] == [
        (0, 0, 4), (0, 4, 4), (0, 8, 2), (1, 0, 4), (1, 4, 4), (1, 8, 2)]
    assert len({t.seed for t in tasks}) == len(tasks)
    assert [t.seed for t in tasks] == [t.seed for t in plan_tasks(["a.cif", "b.cif"], 10, GenerationSettings(), 7,
                                                                   tmp_path, chunk=4)]


def test_each_process_takes_the_threads_of_the_cores_it_is_given():
    code = ("import torch, os\nfrom app.engine.core.threads import configure_threads\n"
            "print(configure_threads(), torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])")
    env = {**os.environ, "CRYSTAL_DESIGNER_CORES": "1"}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "1"]
    env["CRYSTAL_DESIGNER_CORES"] = "3"
    code = code.replace("configure_threads()", "configure_threads(reserve=1)")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "2", "2"]


def test_worker_warm_up_runs_once_per_process(tiny_models, example, tmp_path, monkeypatch):
    from app.engine.campaign import runtime

    monkeypatch.setattr(runtime, "_WARM", False)
    monkeypatch.setattr(runtime, "_GENERATOR", None)
    assert runtime.warm_up_worker(str(example("SrTiO3"))) > 0
    assert runtime._GENERATOR is not None
    assert runtime.warm_up_worker(str(example("SrTiO3"))) == 0.0
