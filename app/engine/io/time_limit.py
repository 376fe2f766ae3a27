"""A wall-clock limit on one call, so that a pathological file cannot hang a batch."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


class TimeLimitExceeded(Exception):
    """The call ran past its time limit."""


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def on_alarm(signum, frame):
        raise TimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def call_with_time_limit(function: Callable[[], T], seconds: float | None) -> T:
    """Run ``function()`` and return its result, or raise :class:`TimeLimitExceeded` after ``seconds``.

    In the main thread of a POSIX process (the command line, the worker process, pool workers)
    a timer signal interrupts the call. Elsewhere the call runs in a daemon thread that is
    abandoned when it overruns: the caller gets its answer in time, the thread finishes later.
    """
    if not seconds or seconds <= 0:
        return function()
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        with _alarm(seconds):
            return function()
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:  # handed back to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="crystal-read")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeLimitExceeded()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
