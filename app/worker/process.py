"""The worker process: runs jobs in order and streams progress and results back.

Jobs run one after the other, except that short interactive jobs may run between the batches
of a long one (see :class:`_JobServer`).

:func:`worker_main` is the target of a ``multiprocessing`` *spawn* process (a fresh interpreter:
no Qt, and torch is imported here, never in the window's process). It is a top-level function
of an importable module, so it works with ``multiprocessing.freeze_support()`` in frozen apps.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import traceback
from typing import Any

from app.engine.core.cancel import CancelToken
from app.engine.core.errors import CancelledError, CrystalDesignerError
from app.worker import protocol
from app.worker.protocol import JobRequest, Reply

logger = logging.getLogger(__name__)

#: How often an idle worker checks that the application that started it is still running (s).
PARENT_CHECK_SECONDS = 2.0


class SharedCancelToken(CancelToken):
    """Cancellation of one job through a ``multiprocessing.Event`` shared with the app.

    The app sets ``job_value`` to the id of the job to stop, then sets ``event``. Keying on the
    job id means a late cancel for a finished job never stops the next one.
    """

    def __init__(self, event, job_value, job_id: int) -> None:
        super().__init__()
        self._shared_event = event
        self._job_value = job_value
        self._job_id = job_id

    def cancel(self) -> None:
        self._job_value.value = self._job_id
        self._shared_event.set()

    @property
    def cancelled(self) -> bool:
        return self._shared_event.is_set() and self._job_value.value == self._job_id

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise CancelledError("Cancelled by the user.")


class JobContext:
    """What a job function gets: progress and streaming back to the app, cancel token, models.

    Parameters
    ----------
    send : callable
        Sends a :class:`Reply` to the app.
    job_id : int
    cancel : CancelToken
    models : app.worker.models.WorkerModels
    between_batches : callable, optional
        Runs the interactive jobs waiting in the queue (None inside such a job: no nesting).
    """

    def __init__(self, send, job_id: int, cancel: CancelToken, models, between_batches=None) -> None:
        self._send = send
        self.job_id = job_id
        self.cancel = cancel
        self.models = models
        self._between_batches = between_batches

    def run_waiting_interactive_jobs(self) -> None:
        """Call between batches of a long job: lets waiting reads/predictions/density maps run."""
        if self._between_batches is not None:
            self._between_batches()

    def progress(self, done: int, total: int, message: str = "") -> None:
        """Report ``done`` of ``total`` steps (engine ``ProgressCallback`` signature)."""
        self._send(Reply(protocol.PROGRESS, self.job_id, (int(done), int(total), str(message))))

    def emit(self, items: list) -> None:
        """Stream partial results (read entries, candidates) before the job ends."""
        if items:
            self._send(Reply(protocol.ITEMS, self.job_id, list(items)))


class _ForwardingHandler(logging.Handler):
    """Sends the worker's log records to the app, which logs them under its own handlers."""

    def __init__(self, send) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(Reply(protocol.LOG, 0, (record.levelno, record.name, self.format(record))))
        except Exception:  # the pipe is gone: the app is shutting down; logging must not raise
            pass


def _limit_threads() -> None:
    """Leave one core to the window: torch uses all but one (at least one) thread."""
    import torch  # noqa: F401  (imported first so configure_threads sets its pools too)

    from app.engine.core.threads import configure_threads

    configure_threads(reserve=1)


def _error_payload(error: BaseException) -> dict[str, str]:
    return {"type": type(error).__name__, "message": str(error) or type(error).__name__}


def worker_main(requests, replies, cancel_event, cancel_job, device: str, log_level: int = logging.WARNING) -> None:
    """Serve job requests until a ``None`` request arrives.

    Parameters
    ----------
    requests : multiprocessing.Queue
        :class:`JobRequest` objects, or None to stop.
    replies : multiprocessing.connection.Connection
        Write end of the reply pipe (:class:`Reply` objects).
    cancel_event : multiprocessing.Event
    cancel_job : multiprocessing.Value
        Id of the job ``cancel_event`` refers to (see :class:`SharedCancelToken`).
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    log_level : int
        Records at or above it are forwarded to the app.
    """
    # Ctrl+C in the terminal is for the app, which then stops the worker in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def send(reply: Reply) -> None:
        replies.send(reply)

    root = logging.getLogger()
    root.setLevel(log_level)
    root.addHandler(_ForwardingHandler(send))
    _limit_threads()

    from app.worker.models import WorkerModels

    server = _JobServer(requests, send, cancel_event, cancel_job, WorkerModels(device))
    send(Reply(protocol.READY, 0, {"pid": os.getpid()}))
    server.serve()
    replies.close()


class _JobServer:
    """Runs jobs in arrival order, except that *interactive* jobs (reading, predicting, density
    maps: marked ``runs_between_batches`` in :mod:`app.worker.jobs`) may run between the batches
    of a long job, so opening a file or viewing a map does not wait for a whole generation."""

    def __init__(self, requests, send, cancel_event, cancel_job, models) -> None:
        self._requests = requests
        self._send = send
        self._cancel_event = cancel_event
        self._cancel_job = cancel_job
        self._models = models
        self._backlog: collections.deque = collections.deque()

    def serve(self) -> None:
        parent = multiprocessing.parent_process()
        while True:
            if self._backlog:
                request = self._backlog.popleft()
            else:
                try:
                    request = self._requests.get(timeout=PARENT_CHECK_SECONDS)
                except queue.Empty:
                    # The app was killed (no clean shutdown message): don't outlive it.
                    if parent is not None and not parent.is_alive():
                        logger.info("The application has exited; the worker stops.")
                        return
                    continue
            if request is None:
                return
            self._run(request, between_batches=self._run_interactive_jobs)

    def _run_interactive_jobs(self) -> None:
        """Checkpoint of a long job: run the interactive jobs waiting, keep the others for later."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request is not None and getattr(request.function, "runs_between_batches", False):
                self._run(request, between_batches=None)
            else:
                self._backlog.append(request)

    def _run(self, request: JobRequest, between_batches) -> None:
        job_id, send = request.job_id, self._send
        send(Reply(protocol.STARTED, job_id))
        context = JobContext(send, job_id, SharedCancelToken(self._cancel_event, self._cancel_job, job_id),
                             self._models, between_batches)
        try:
            result: Any = request.function(context, **request.kwargs)
        except Exception as error:  # every job failure goes back to the awaiting caller, as data
            name = getattr(request.function, "__name__", "?")
            if isinstance(error, CrystalDesignerError):
                logger.debug("Job %s stopped: %s", name, error)
            else:  # a bug, not bad input: keep the traceback in the app's log
                logger.error("Job %s failed:\n%s", name, traceback.format_exc())
            send(Reply(protocol.ERROR, job_id, _error_payload(error)))
            return
        try:
            send(Reply(protocol.RESULT, job_id, result))
        except (pickle.PicklingError, TypeError, AttributeError) as error:  # pickling fails before any byte is sent
            logger.error("Job %s returned a result that cannot be sent: %s", request.function, error)
            send(Reply(protocol.ERROR, job_id, _error_payload(error)))
