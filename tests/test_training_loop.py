"""The shared training loop: resume from the checkpoint, cancel, per-epoch record, best weights."""

import numpy as np
import pytest
import torch

from app.engine.core.cancel import CancelToken
from app.engine.core.errors import CancelledError
from app.engine.training.loop import fit_epochs

X = torch.linspace(-1, 1, 40)[:, None]
Y = 3 * X + 1


def _run(name, epochs, fresh=False, cancel=None, after_steps=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=100)
    calls = {"steps": 0}

    def step(rows, rng):
        calls["steps"] += 1
        if after_steps is not None and calls["steps"] > after_steps:
            cancel.cancel()
        loss = torch.nn.functional.mse_loss(model(X[rows]), Y[rows])
        return loss, {"loss": loss.item()}

    def evaluate():
        with torch.no_grad():
            error = float(torch.nn.functional.mse_loss(model(X), Y))
        return error, {"val_mse": error}

    state = fit_epochs(name, {"toy": 1}, epochs, model, optimizer, scheduler, np.arange(40), 8, step, evaluate,
                       fresh=fresh, cancel=cancel)
    return state, model, calls


def test_records_every_epoch_and_keeps_the_best(monkeypatch, tmp_path):
    monkeypatch.setenv("CRYSTAL_DESIGNER_CACHE", str(tmp_path))
    state, model, calls = _run("toy", 4)
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4] and calls["steps"] == 4 * 5
    assert all({"loss", "val_mse", "seconds"} <= set(h) for h in state["history"])
    best = min(state["history"], key=lambda h: h["val_mse"])
    assert state["best"]["epoch"] == best["epoch"]
    assert (tmp_path / "checkpoints" / "toy.pt").exists()


def test_an_interrupted_run_resumes_where_it_stopped(monkeypatch, tmp_path):
    monkeypatch.setenv("CRYSTAL_DESIGNER_CACHE", str(tmp_path))
    token = CancelToken()
    with pytest.raises(CancelledError):
        _run("halted", 3, cancel=token, after_steps=7)  # cancelled in epoch 2: epoch 1 is checkpointed
    resumed, model, calls = _run("halted", 3)
    assert calls["steps"] == 2 * 5  # only epochs 2 and 3 ran again
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][0]["val_mse"] > resumed["history"][-1]["val_mse"]  # epoch 1 came from the checkpoint
    fresh, _, calls = _run("halted", 3, fresh=True)
    assert calls["steps"] == 3 * 5 and len(fresh["history"]) == 3
