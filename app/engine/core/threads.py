"""How many threads an engine process may use, set once from the cores it is given.

Two engine jobs on one machine (a prediction beside a relaxation, the GUI's worker beside a
training, one Dask worker per core) each default to one OpenMP/torch thread per core of the
machine; together they oversubscribe the cores and spin against each other (epochs ran 10x
slower that way). Every entry point calls :func:`configure_threads` with its share instead.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger(__name__)

#: Environment variable that gives a process its core count (overrides the affinity mask).
CORES_ENV = "CRYSTAL_DESIGNER_CORES"
#: Thread-pool variables of the native libraries (read when they start, so set before import).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may use: ``CRYSTAL_DESIGNER_CORES``, else ``OMP_NUM_THREADS`` when the
    caller set it, else the CPU affinity mask (what a container or ``taskset`` grants)."""
    for name in (CORES_ENV, "OMP_NUM_THREADS"):
        try:
            value = int(os.environ.get(name, ""))
        except ValueError:
            continue
        if value >= 1:
            return value
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def configure_threads(cores: int | None = None, reserve: int = 0) -> int:
    """Limit this process's torch and OpenMP threads to its share of the cores.

    Parameters
    ----------
    cores : int, optional
        Cores given to this process (default :func:`available_cores`).
    reserve : int
        Cores to leave free for something else on the same machine (e.g. the GUI thread).

    Returns
    -------
    int
        The thread count set (at least 1).
    """
    threads = max(1, (cores or available_cores()) - reserve)
    for name in THREAD_ENV:  # torch reads these when it is imported; children inherit them
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")  # not imported here: commands that never need torch stay fast
    if torch is None:
        return threads
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op of the process
        pass
    logger.debug("using %d thread(s)", threads)
    return threads
