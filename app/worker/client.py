"""The app's side of the worker: owns the process, and turns jobs into awaitables.

``await client.predict(paths, progress=cb)`` sends a job to the worker process and resolves
with its result; progress and streamed items are delivered on the asyncio loop's thread (with
qasync: the GUI thread), so callbacks may touch widgets. A listener thread only moves replies
from the pipe to the loop (``loop.call_soon_threadsafe``).

When the worker dies, the running job raises :class:`WorkerCrashedError`, jobs not yet started
are kept, and a new worker is started (models reload there) which then runs them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from app.engine.core.errors import CancelledError
from app.engine.generation.settings import GenerationSettings
from app.worker import jobs, protocol
from app.worker.errors import WorkerCrashedError, WorkerStoppedError, describe_exit, rebuild_error
from app.worker.process import worker_main
from app.worker.protocol import JobRequest, Reply

logger = logging.getLogger(__name__)
worker_logger = logging.getLogger("crystal_designer.worker")

STARTING, IDLE, BUSY, RESTARTING, STOPPED = "starting", "idle", "busy", "restarting", "stopped"
#: More crashes than this within ``RESTART_WINDOW_S`` seconds: stop restarting (a crash loop).
MAX_RESTARTS = 3
RESTART_WINDOW_S = 60.0
_POLL_S = 0.2

ProgressHandler = Callable[[int, int, str], None]
ItemsHandler = Callable[[list], None]


@dataclass(eq=False)
class _PendingJob:
    request: JobRequest
    future: asyncio.Future
    name: str
    progress: ProgressHandler | None = None
    on_items: ItemsHandler | None = None
    internal: bool = False
    started: bool = False
    cancel_requested: bool = False


class Job:
    """Handle of a submitted job: ``await job`` for its result, ``job.cancel()`` to stop it."""

    def __init__(self, client: "WorkerClient", pending: _PendingJob) -> None:
        self._client = client
        self._pending = pending

    @property
    def id(self) -> int:
        return self._pending.request.job_id

    @property
    def name(self) -> str:
        return self._pending.name

    def cancel(self) -> None:
        """Ask the worker to stop this job at its next checkpoint (between batches)."""
        self._client.cancel(self.id)

    def done(self) -> bool:
        return self._pending.future.done()

    def __await__(self):
        return self._pending.future.__await__()


class WorkerClient:
    """Starts, feeds, watches and restarts the worker process.

    Parameters
    ----------
    device : str
        Torch device for the worker: ``auto``, ``cpu``, ``cuda`` or ``mps``.
    on_state : callable, optional
        ``on_state(state)`` with one of ``starting``, ``idle``, ``busy``, ``restarting``, ``stopped``.
    on_models : callable, optional
        ``on_models(info)`` each time a worker has loaded its models (see ``jobs.load_models``).
    on_crash : callable, optional
        ``on_crash(message)`` when the worker died; ``message`` is written for the user.
    log_level : int
        Worker log records at or above this level are logged here.
    """

    def __init__(self, device: str = "auto", *, on_state: Callable[[str], None] | None = None,
                 on_models: Callable[[dict], None] | None = None, on_crash: Callable[[str], None] | None = None,
                 log_level: int = logging.WARNING) -> None:
        self.device = device
        self._on_state = on_state
        self._on_models = on_models
        self._on_crash = on_crash
        self._log_level = log_level
        self._context = multiprocessing.get_context("spawn")
        self._ids = itertools.count(1)
        self._jobs: dict[int, _PendingJob] = {}
        self._crash_times: list[float] = []
        self._incarnation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process = None
        self._requests = None
        self._cancel_event = None
        self._cancel_job = None
        self._ready = False
        self._closing = False
        self._state = STOPPED
        self.model_info: dict | None = None
        self._models_waiters: list[asyncio.Future] = []

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def pid(self) -> int | None:
        """Process id of the current worker (None before start)."""
        return self._process.pid if self._process is not None else None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the worker process (returns at once; models load in the worker)."""
        if self._process is not None:
            return
        self._loop = loop or asyncio.get_event_loop()
        self._closing = False
        self._spawn()

    def _spawn(self) -> None:
        context = self._context
        self._incarnation += 1
        self._ready = False
        self._requests = context.Queue()
        reader, writer = context.Pipe(duplex=False)
        self._cancel_event = context.Event()
        self._cancel_job = context.Value("q", 0)
        self._process = context.Process(
            target=worker_main, name="crystal-designer-worker", daemon=True,
            args=(self._requests, writer, self._cancel_event, self._cancel_job, self.device, self._log_level))
        self._process.start()
        # Only the worker holds the write end now, so its death shows up here as end-of-file.
        writer.close()
        threading.Thread(target=self._listen, args=(self._incarnation, reader, self._process),
                         name="crystal-designer-worker-listener", daemon=True).start()
        self._set_state(STARTING if self._incarnation == 1 else RESTARTING)
        self._submit_internal_model_load()
        for pending in list(self._jobs.values()):
            if not pending.internal and not pending.started and not pending.future.done():
                self._requests.put(pending.request)
        logger.info("Worker process %s started (device %s).", self._process.pid, self.device)

    def _submit_internal_model_load(self) -> None:
        job = self._submit(jobs.load_models, {}, internal=True)
        job._pending.future.add_done_callback(self._models_loaded)

    def _models_loaded(self, future: asyncio.Future) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            if not isinstance(error, (WorkerCrashedError, WorkerStoppedError)):
                logger.error("The worker could not load its models: %s", error)
            return
        self.model_info = future.result()
        for waiter in self._models_waiters:
            if not waiter.done():
                waiter.set_result(self.model_info)
        self._models_waiters.clear()
        if self._on_models is not None:
            self._on_models(self.model_info)

    async def wait_models(self) -> dict:
        """The model description of the current worker, once it has loaded them."""
        if self.model_info is not None:
            return self.model_info
        waiter = self._loop.create_future()
        self._models_waiters.append(waiter)
        return await waiter

    async def shutdown(self, timeout: float = 3.0) -> None:
        """Stop the worker in order (cancel, ask to exit, then terminate if it must)."""
        process = self._begin_shutdown()
        if process is None:
            return
        deadline = time.monotonic() + timeout
        while process.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._finish_shutdown(process)

    def close(self, timeout: float = 2.0) -> None:
        """Blocking :meth:`shutdown` for places that cannot await (``closeEvent``, atexit)."""
        process = self._begin_shutdown()
        if process is not None:
            process.join(timeout)
            self._finish_shutdown(process)

    def _begin_shutdown(self):
        if self._process is None:
            return None
        self._closing = True
        process = self._process
        for pending in self._jobs.values():
            if pending.started:
                self._signal_cancel(pending.request.job_id)
        try:
            self._requests.put(None)
        except (OSError, ValueError):
            pass
        self._fail_all(WorkerStoppedError("The worker was stopped."))
        return process

    def _finish_shutdown(self, process) -> None:
        if process.is_alive():
            process.terminate()
            process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join(1.0)
        self._close_queue()
        self._process = None
        self._set_state(STOPPED)

    def _close_queue(self) -> None:
        if self._requests is not None:
            self._requests.cancel_join_thread()  # never wait on a dead reader
            self._requests.close()
            self._requests = None

    # -- jobs --------------------------------------------------------------------------------

    def submit(self, function: Callable[..., Any], *, progress: ProgressHandler | None = None,
               on_items: ItemsHandler | None = None, **kwargs) -> Job:
        """Queue ``function(context, **kwargs)`` (a top-level job of :mod:`app.worker.jobs`).

        Returns
        -------
        Job
            Await it for the result; it raises the engine's error classes, ``CancelledError``
            after :meth:`Job.cancel`, or :class:`WorkerCrashedError` if the worker died.
        """
        if self._process is None or self._closing:
            raise WorkerStoppedError("The worker is not running.")
        return self._submit(function, kwargs, progress=progress, on_items=on_items)

    def _submit(self, function, kwargs: dict, *, progress=None, on_items=None, internal=False) -> Job:
        request = JobRequest(next(self._ids), function, kwargs)
        pending = _PendingJob(request, self._loop.create_future(), getattr(function, "__name__", "job"),
                              progress, on_items, internal)
        self._jobs[request.job_id] = pending
        self._requests.put(request)
        self._update_busy_state()
        return Job(self, pending)

    async def predict(self, paths: Iterable[str | Path], progress: ProgressHandler | None = None,
                      on_items: ItemsHandler | None = None, predictor: str = "cgcnn") -> list[dict]:
        """Read files/folders and predict with ``predictor`` (``cgcnn`` or ``pointnet``); read
        entries stream to ``on_items`` first."""
        return await self.submit(jobs.read_and_predict, progress=progress, on_items=on_items,
                                 paths=[str(p) for p in paths], predictor=predictor)

    async def read(self, paths: Iterable[str | Path], on_items: ItemsHandler | None = None) -> list[dict]:
        """Read files/folders without predicting."""
        return await self.submit(jobs.read_files, on_items=on_items, paths=[str(p) for p in paths])

    def generate(self, settings: GenerationSettings, base=None, second=None, progress: ProgressHandler | None = None,
                 on_items: ItemsHandler | None = None) -> Job:
        """Start a generation with a ``GenerationSettings``; candidates stream to ``on_items`` batch by batch."""
        return self.submit(jobs.generate, progress=progress, on_items=on_items, settings=settings, base=base,
                           second=second)

    async def refresh_models(self) -> dict:
        """Ask the worker what it has loaded now (models load on first use); also sent to ``on_models``
        listeners through :attr:`model_info`. Returns the description."""
        info = await self.submit(jobs.describe_models)
        self.model_info = info
        return info

    async def encode_density(self, structure) -> dict:
        """Density map of a structure for the viewer, cubic or periodic (see ``jobs.encode_density``)."""
        return await self.submit(jobs.encode_density, structure=structure)

    def cancel(self, job_id: int) -> None:
        """Stop a job: a running one at its next checkpoint, a queued one before it starts."""
        pending = self._jobs.get(job_id)
        if pending is None or pending.cancel_requested:
            return
        pending.cancel_requested = True
        if pending.started:
            self._signal_cancel(job_id)
        elif not pending.future.done():
            # Resolve at once; the worker is told when (if) the job starts, see _dispatch.
            pending.future.set_exception(CancelledError("Cancelled by the user."))

    def _signal_cancel(self, job_id: int) -> None:
        with self._cancel_job.get_lock():
            self._cancel_job.value = job_id
            self._cancel_event.set()

    # -- replies -----------------------------------------------------------------------------

    def _listen(self, incarnation: int, reader, process) -> None:
        """Listener thread: pipe → loop. Ends at end-of-file, i.e. when the worker exits."""
        while True:
            try:
                if not reader.poll(_POLL_S):
                    if process.is_alive():
                        continue
                    if not reader.poll(0):
                        break
                reply = reader.recv()
            except (EOFError, OSError):
                break
            except Exception:  # a reply that cannot be unpickled: the worker is in an unknown state
                logger.exception("Unreadable reply from the worker.")
                process.kill()
                break
            if not self._post(self._dispatch, incarnation, reply):
                return
        reader.close()
        process.join(2.0)
        self._post(self._on_exit, incarnation, process.exitcode)

    def _post(self, callback, *args) -> bool:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
            return True
        except RuntimeError:  # the loop is closed: the app has ended
            return False

    def _dispatch(self, incarnation: int, reply: Reply) -> None:
        if incarnation != self._incarnation:
            return  # from a worker that has already been replaced
        if reply.kind == protocol.LOG:
            level, name, message = reply.payload
            worker_logger.log(level, "%s: %s", name, message)
            return
        if reply.kind == protocol.READY:
            self._ready = True
            self._crash_times = [t for t in self._crash_times if time.monotonic() - t < RESTART_WINDOW_S]
            self._update_busy_state()
            return
        pending = self._jobs.get(reply.job_id)
        if pending is None:
            return
        try:
            self._handle_job_reply(pending, reply)
        except Exception:  # a failing callback must not stop the replies of other jobs
            logger.exception("Handling the %s reply of job %s failed.", reply.kind, pending.name)

    def _handle_job_reply(self, pending: _PendingJob, reply: Reply) -> None:
        kind = reply.kind
        if kind == protocol.STARTED:
            pending.started = True
            if pending.cancel_requested:
                self._signal_cancel(pending.request.job_id)
        elif kind == protocol.PROGRESS:
            if pending.progress is not None and not pending.future.done():
                pending.progress(*reply.payload)
        elif kind == protocol.ITEMS:
            if pending.on_items is not None and not pending.future.done():
                pending.on_items(reply.payload)
        elif kind in (protocol.RESULT, protocol.ERROR):
            del self._jobs[reply.job_id]
            if not pending.future.done():
                if kind == protocol.RESULT:
                    pending.future.set_result(reply.payload)
                else:
                    pending.future.set_exception(rebuild_error(reply.payload))
            self._update_busy_state()

    def _on_exit(self, incarnation: int, exitcode: int | None) -> None:
        if incarnation != self._incarnation or self._closing:
            return
        what = describe_exit(exitcode)
        running = [p for p in self._jobs.values() if p.started]
        for pending in running:
            del self._jobs[pending.request.job_id]
            if not pending.future.done():
                pending.future.set_exception(WorkerCrashedError(
                    f"The inference worker {what} while running '{pending.name}'. That job was lost; "
                    "the worker is being restarted."))
        for pending in [p for p in self._jobs.values() if p.internal]:
            del self._jobs[pending.request.job_id]
            pending.future.cancel()
        logger.error("Worker process %s %s.", self.pid, what)
        self._close_queue()
        self.model_info = None
        now = time.monotonic()
        self._crash_times = [t for t in self._crash_times if now - t < RESTART_WINDOW_S] + [now]
        if len(self._crash_times) > MAX_RESTARTS:
            self._process = None
            self._fail_all(WorkerStoppedError("The inference worker keeps crashing and was not restarted."))
            self._set_state(STOPPED)
            self._notify_crash(f"The inference worker {what} and has crashed {len(self._crash_times)} times in a "
                               "minute; it was not restarted. Save your work and restart the app.")
            return
        self._notify_crash(f"The inference worker {what}. It is being restarted; results already shown are kept.")
        self._spawn()

    def _notify_crash(self, message: str) -> None:
        if self._on_crash is not None:
            try:
                self._on_crash(message)
            except Exception:
                logger.exception("The crash handler failed.")

    def _fail_all(self, error: Exception) -> None:
        for pending in list(self._jobs.values()):
            if not pending.future.done():
                if pending.internal:
                    pending.future.cancel()
                else:
                    pending.future.set_exception(error)
        self._jobs.clear()
        for waiter in self._models_waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._models_waiters.clear()

    # -- state -------------------------------------------------------------------------------

    def _update_busy_state(self) -> None:
        if self._process is None or self._closing:
            return
        if not self._ready:
            return  # still starting or restarting
        self._set_state(BUSY if self._jobs else IDLE)

    def _set_state(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                logger.exception("The state handler failed.")
