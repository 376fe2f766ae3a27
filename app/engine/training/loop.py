"""The one training loop: epochs of shuffled mini-batches, resumable, cancellable, recorded.

Every trainer supplies what differs (how a batch of rows becomes a loss, how an epoch is
scored); :func:`fit_epochs` does what is the same: resume from the run's checkpoint, shuffle,
step optimizer and scheduler, check the cancel token, record each epoch in the run's history,
keep the best weights, write the checkpoint after every epoch, and report progress.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import numpy as np

from app.engine.core.cancel import CancelToken, ProgressCallback
from app.engine.training import checkpoints

logger = logging.getLogger(__name__)

#: Mini-batches with fewer rows are skipped (batch statistics of one row are meaningless).
MIN_BATCH_ROWS = 2


def fit_epochs(name: str, config: dict, epochs: int, model, optimizer, scheduler, train_rows: np.ndarray,
               batch_size: int, step: Callable, evaluate: Callable, *, seed: int = 0, fresh: bool = False,
               cancel: CancelToken | None = None, progress: ProgressCallback | None = None) -> dict:
    """Train ``model`` for the epochs its checkpoint has not done yet; load the best weights.

    Parameters
    ----------
    name : str
        Run name: the checkpoint file and the log lines.
    config : dict
        Architecture of the run; a checkpoint of another architecture or epoch count is ignored.
    epochs : int
        Total epochs of the run (the scheduler is built for them).
    model, optimizer, scheduler
        torch objects; the scheduler steps once per optimizer step.
    train_rows : numpy.ndarray
        Row indices of the training set, shuffled every epoch.
    batch_size : int
        Rows per optimizer step (``ceil(len(train_rows) / batch_size)`` steps per epoch).
    step : callable
        ``step(rows, rng) -> (loss tensor, {part name: float})``: the loss of one mini-batch and the
        parts to average into the epoch's history (sums are divided by the steps per epoch).
    evaluate : callable
        ``evaluate() -> (score, metrics dict)`` after each epoch; lower scores are better and the
        best epoch's weights are kept.
    seed : int
        Offset of the shuffling seed: the generator is seeded with (epochs already done + ``seed``)
        when the call starts, as the trainers always did, so an uninterrupted run reproduces
        the shipped weights; a resumed run shuffles its remaining epochs differently.
    fresh : bool
        Ignore an existing checkpoint.
    cancel : CancelToken, optional
        Checked before every step; raises :class:`CancelledError` (the last epoch's checkpoint stays).
    progress : callable, optional
        ``progress(epochs done, epochs, message)`` after every epoch.

    Returns
    -------
    dict
        The run state: ``epoch``, ``history`` (one dict per epoch), ``best`` (score, epoch).
    """
    steps = math.ceil(len(train_rows) / batch_size)
    state = checkpoints.new_run_state() if fresh else checkpoints.resume(name, config, epochs, model, optimizer,
                                                                          scheduler)
    rng = np.random.default_rng(state["epoch"] + seed)
    for epoch in range(state["epoch"], epochs):
        model.train()
        began = time.perf_counter()
        totals: dict[str, float] = {}
        order = rng.permutation(train_rows)
        for index in range(steps):
            if cancel is not None:
                cancel.raise_if_cancelled()
            rows = order[index * batch_size:(index + 1) * batch_size]
            if len(rows) < MIN_BATCH_ROWS:
                continue
            loss, parts = step(rows, rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + float(value)
        score, metrics = evaluate()
        record = {**{key: total / steps for key, total in totals.items()}, **metrics,
                  "seconds": time.perf_counter() - began}
        checkpoints.record_epoch(state, epoch + 1, score, model, record)
        logger.info("%s epoch %d/%d: %s", name, epoch + 1, epochs, state["history"][-1])
        checkpoints.save(name, config, epochs, model, optimizer, scheduler, state)
        if progress is not None:
            progress(epoch + 1, epochs, f"epoch {epoch + 1}: score {score:.4g}")
    if state["best"]["state"] is not None:
        model.load_state_dict(state["best"]["state"])
    return state
