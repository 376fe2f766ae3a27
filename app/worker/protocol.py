"""Messages between the app and its worker process (picklable plain dataclasses).

Requests travel on a ``multiprocessing.Queue``; replies on a one-way ``Pipe`` whose write end
only the worker holds, so the app sees end-of-file the moment the worker dies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

#: Reply kinds.
READY = "ready"        # payload: {"pid": int}; job_id 0
STARTED = "started"    # the job left the queue and runs now
PROGRESS = "progress"  # payload: (done, total, message)
ITEMS = "items"        # payload: list of streamed results (read entries, candidates)
RESULT = "result"      # payload: the job function's return value
ERROR = "error"        # payload: {"type": exception class name, "message": str}
LOG = "log"            # payload: (levelno, logger name, message); job_id 0


@dataclass
class JobRequest:
    """Run ``function(context, **kwargs)`` in the worker.

    ``function`` must be a top-level function (pickled by reference); see :mod:`app.worker.jobs`.
    """

    job_id: int
    function: Callable[..., Any]
    kwargs: dict = field(default_factory=dict)


@dataclass
class Reply:
    kind: str
    job_id: int
    payload: Any = None
