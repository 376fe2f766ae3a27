"""Screening campaigns: generate, filter and predict many candidates around many bases on Dask.

A campaign is split into tasks of (base × chunk of samples). Each task runs the same engine
path as ``crystal-designer generate`` (:meth:`CrystalGenerator.generate`, relaxation included
when the settings ask for it) with a seed derived from the campaign seed, the base and the chunk,
so a chunk gives the same candidates wherever and however often it runs. A task writes its
candidates as one Parquet partition and the kept ones as CIFs, then a small JSON summary (its
funnel) last: a chunk whose summary exists is complete, which is what ``resume`` reuses and what
makes a retried task (its worker died) safe. Only the summaries travel back to the driver.

Uniqueness is judged within a chunk (the generator's own rule); duplicates across chunks can
remain and are easy to drop from the Parquet table (formula + space group + properties).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from app.engine.core.errors import CrystalDesignerError
from app.engine.core.property_table import PROPERTY_KEYS
from app.engine.generation.settings import FUNNEL_STAGE_KEYS, GenerationSettings

logger = logging.getLogger(__name__)

#: Samples per task: big enough that model and process overheads vanish (~10 s of work per task
#: on one core), small enough that a lost worker costs little and progress is smooth.
DEFAULT_CHUNK = 256
#: Task retries after a worker dies (Dask reschedules on another worker).
TASK_RETRIES = 3
CANDIDATES_DIR, CIFS_DIR, CHUNKS_DIR = "candidates", "cifs", "chunks"


@dataclass(frozen=True)
class ChunkTask:
    """One unit of work: ``count`` samples around base ``base_index`` with seed ``seed``."""

    task_id: str
    base_index: int
    base_path: str
    first_sample: int
    count: int
    seed: int
    settings: dict
    out: str


@dataclass
class CampaignResult:
    """What the driver aggregates: the campaign funnel and where everything was written."""

    funnel: dict[str, int]
    kept: int
    samples: int
    tasks: int
    reused_tasks: int
    seconds: float
    out: str
    candidates_dir: str
    cifs_dir: str
    base_errors: dict[str, str] = field(default_factory=dict)
    task_errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def chunk_seed(seed: int, base_index: int, chunk_index: int) -> int:
    """Independent, reproducible seed of one chunk (numpy's SeedSequence mixes the three)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, base_index, chunk_index]).generate_state(1)[0] & 0x7FFFFFFF)


def plan_tasks(bases: Sequence[str], n_per_base: int, settings: GenerationSettings, seed: int, out: Path,
               chunk: int = DEFAULT_CHUNK) -> list[ChunkTask]:
    """All tasks of a campaign, in (base, chunk) order."""
    if n_per_base < 1:
        raise CrystalDesignerError("The number of samples per base must be at least 1.")
    if chunk < 1:
        raise CrystalDesignerError("The chunk size must be at least 1.")
    data = asdict(settings)
    tasks = []
    for b, base in enumerate(bases):
        for c, first in enumerate(range(0, n_per_base, chunk)):
            tasks.append(ChunkTask(f"b{b:04d}-c{c:06d}", b, str(base), first, min(chunk, n_per_base - first),
                                   chunk_seed(seed, b, c), data, str(out)))
    return tasks


# --- worker side ------------------------------------------------------------------------------

_GENERATOR = None  # one per worker process: models load once, never per task


def worker_generator():
    """This process's :class:`CrystalGenerator` (loaded on first use, from the models folder that
    ``CRYSTAL_DESIGNER_MODELS`` / ``CRYSTAL_DESIGNER_HOME`` name on the worker)."""
    global _GENERATOR
    if _GENERATOR is None:
        from app.engine.core.threads import configure_threads
        from app.engine.generation.generator import CrystalGenerator

        # One Dask worker per core: one thread each, and no segmentation pool of its own.
        configure_threads(int(os.environ.get("CRYSTAL_DESIGNER_CORES", "1")))
        _GENERATOR = CrystalGenerator(device="cpu", segmentation_workers=1)
    return _GENERATOR


def warm_up_worker(base_path: str | None = None) -> float:
    """Do in this process, once, what the first chunk of a campaign would otherwise do on top of
    its samples (~2 s): load the models, then generate two samples (which loads the structure
    index, the hull and the matcher) and write a one-row Parquet table (pyarrow's first write
    imports pandas). Returns the seconds it took; later calls return 0 at once.

    A campaign does not need it (the first chunk pays the same), but a measurement of the
    steady-state rate does, and so does a worker that should answer its first task at full speed.
    """
    global _WARM
    if _WARM:
        return 0.0
    began = time.perf_counter()
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from app.engine.io.crystal_io import read_crystal_file

    generator = worker_generator()
    loaded = [c for c in read_crystal_file(base_path) if c.ok] if base_path else []
    mode = "around" if loaded else "random"
    try:
        generator.generate(GenerationSettings(mode=mode, count=2, seed=0, relax=False),
                           base=loaded[0].structure if loaded else None)
    except CrystalDesignerError:  # the campaign's own chunks report what is wrong
        logger.debug("warm-up generation failed", exc_info=True)
    pq.write_table(pa.Table.from_pylist([{"x": 1.0}]), io.BytesIO())
    _WARM = True
    return time.perf_counter() - began


_WARM = False


def summary_path(out: Path, task_id: str) -> Path:
    return out / CHUNKS_DIR / f"{task_id}.json"


def run_chunk(task: ChunkTask) -> dict:
    """Generate, filter and predict one chunk and write its outputs; returns its summary.

    A base that cannot be used gives a summary with ``error`` (the campaign goes on).
    """
    out = Path(task.out)
    done = summary_path(out, task.task_id)
    if done.exists():  # a retry after the first attempt finished writing
        return json.loads(done.read_text())
    began, cpu_began = time.perf_counter(), time.process_time()
    try:
        result = _generate_chunk(task)
    except CrystalDesignerError as error:
        summary = {"task_id": task.task_id, "base_index": task.base_index, "base": task.base_path,
                   "samples": task.count, "funnel": {}, "kept": 0, "error": str(error)}
        _write_atomically(done, json.dumps(summary))
        return summary
    rows, kept = _write_chunk_outputs(task, result, out)
    summary = {"task_id": task.task_id, "base_index": task.base_index, "base": task.base_path,
               "samples": task.count, "funnel": dict(result.funnel), "kept": kept, "rows": rows,
               "seconds": round(time.perf_counter() - began, 3),
               "cpu_seconds": round(time.process_time() - cpu_began, 3), "error": None}
    _write_atomically(done, json.dumps(summary))
    return summary


def _generate_chunk(task: ChunkTask):
    from app.engine.io.crystal_io import read_crystal_file

    loaded = [c for c in read_crystal_file(task.base_path) if c.ok] if task.base_path else []
    settings = replace(GenerationSettings(**task.settings), count=task.count, seed=task.seed)
    base = loaded[0].structure if loaded else None
    if task.base_path and base is None:
        raise CrystalDesignerError(f"{task.base_path}: no usable structure in this file.")
    return worker_generator().generate(settings, base=base)


def _write_chunk_outputs(task: ChunkTask, result, out: Path) -> tuple[int, int]:
    """The chunk's Parquet partition and kept CIFs; returns (rows, kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from app.engine.generation.assessment import final_structure
    from app.engine.io.export import safe_filename, write_cif

    cif_dir = out / CIFS_DIR
    cif_dir.mkdir(parents=True, exist_ok=True)
    rows, kept = [], 0
    for candidate in result.candidates:
        sample = task.first_sample + candidate.index
        cif = None
        if candidate.kept:
            kept += 1
            name = f"b{task.base_index:04d}-{sample:07d}_{safe_filename(candidate.formula or 'crystal')}.cif"
            write_cif(final_structure(candidate), cif_dir / name)
            cif = f"{CIFS_DIR}/{name}"
        row = {"task_id": task.task_id, "base_index": task.base_index, "base": task.base_path, "sample": sample,
               "formula": candidate.formula, "space_group": candidate.space_group, "kept": bool(candidate.kept),
               "latent_distance": float(candidate.latent_distance), "error": candidate.error, "cif": cif}
        row.update({key: candidate.properties.get(key) for key in PROPERTY_KEYS})
        row.update({f"passed_{key}": candidate.flags.get(key) for key in FUNNEL_STAGE_KEYS if key != "generated"})
        rows.append(row)
    path = out / CANDIDATES_DIR / f"part-{task.task_id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=candidate_schema()), temporary)
    temporary.replace(path)
    return len(rows), kept


def candidate_schema():
    """Column types of the candidates table (explicit, so partitions with all-null columns agree)."""
    import pyarrow as pa

    text = ("task_id", "base", "formula", "space_group", "error", "cif")
    columns = [(name, pa.string()) for name in text[:2]] + [("base_index", pa.int64()), ("sample", pa.int64())]
    columns += [(name, pa.string()) for name in text[2:4]] + [("kept", pa.bool_()), ("latent_distance", pa.float64())]
    columns += [(name, pa.string()) for name in text[4:]]
    columns += [(key, pa.float64()) for key in PROPERTY_KEYS]
    columns += [(f"passed_{key}", pa.bool_()) for key in FUNNEL_STAGE_KEYS if key != "generated"]
    return pa.schema(columns)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


# --- driver side ------------------------------------------------------------------------------

def check_bases(bases: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Bases that read as a crystal, and ``{path: reason}`` for those that do not."""
    from app.engine.io.crystal_io import read_crystal_file

    usable, errors = [], {}
    for base in bases:
        loaded = read_crystal_file(base)
        good = [c for c in loaded if c.ok]
        if good:
            usable.append(str(base))
        else:
            errors[str(base)] = loaded[0].error if loaded else f"{base}: no structure found."
    return usable, errors


def run_campaign(bases: Sequence[str], n_per_base: int, settings: GenerationSettings, out: Path, *,
                 seed: int = 0, client=None, local_workers: int = 2, resume: bool = False,
                 chunk: int = DEFAULT_CHUNK,
                 progress: Callable[[int, int, str], None] | None = None) -> CampaignResult:
    """Run a campaign on a Dask ``client`` (default: a local cluster of ``local_workers`` processes).

    Parameters
    ----------
    bases : sequence of str
        Base structure files (``around``/``interpolate`` modes); unreadable ones are reported in
        ``base_errors`` and skipped.
    out : Path
        Campaign folder: ``candidates/part-*.parquet``, ``cifs/*.cif``, ``chunks/*.json``,
        ``campaign.json``.
    resume : bool
        Reuse every chunk already written; without it a folder holding chunks is refused.
    """
    began = time.perf_counter()
    out = Path(out)
    settings.validate()
    existing = list((out / CHUNKS_DIR).glob("*.json")) if (out / CHUNKS_DIR).exists() else []
    if existing and not resume:
        raise CrystalDesignerError(f"{out} already holds a campaign ({len(existing)} chunks); "
                                   "pass --resume to continue it or choose another folder.")
    usable, base_errors = check_bases(bases) if settings.mode != "random" else (list(bases) or [""], {})
    tasks = plan_tasks(usable, n_per_base, settings, seed, out, chunk)
    summaries, todo = [], []
    for task in tasks:
        done = summary_path(out, task.task_id)
        (summaries if done.exists() else todo).append(task)
    summaries = [json.loads(summary_path(out, t.task_id).read_text()) for t in summaries]
    reused = len(summaries)
    if todo:
        summaries += _run_on_dask(todo, client, local_workers, progress, reused, len(tasks))
    result = _aggregate(summaries, len(tasks), reused, out, base_errors, time.perf_counter() - began)
    _write_atomically(out / "campaign.json", json.dumps(result.to_dict(), indent=2))
    return result


def _run_on_dask(tasks: list[ChunkTask], client, local_workers: int, progress, done: int, total: int) -> list[dict]:
    from distributed import as_completed

    own = None
    if client is None:
        own = local_client(local_workers)
        client = own
    try:
        futures = client.map(run_chunk, tasks, key=[f"chunk-{t.task_id}" for t in tasks], pure=False,
                             retries=TASK_RETRIES)
        summaries = []
        for future in as_completed(futures):
            summaries.append(future.result())
            future.release()  # the driver keeps only the summary, never the candidates
            done += 1
            if progress is not None:
                progress(done, total, f"{summaries[-1]['task_id']} done")
        return summaries
    finally:
        if own is not None:
            cluster = own.cluster
            own.close()
            cluster.close()


def local_client(workers: int):
    """A Dask client over a local cluster of ``workers`` single-threaded processes (127.0.0.1 only)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    return Client(cluster)


def _aggregate(summaries: list[dict], n_tasks: int, reused: int, out: Path, base_errors: dict,
               seconds: float) -> CampaignResult:
    funnel = {key: 0 for key in FUNNEL_STAGE_KEYS}
    task_errors, samples, kept = {}, 0, 0
    for summary in summaries:
        if summary.get("error"):
            task_errors[summary["task_id"]] = summary["error"]
            base_errors.setdefault(summary["base"], summary["error"])
            continue
        samples += summary["samples"]
        kept += summary["kept"]
        for key, value in summary["funnel"].items():
            funnel[key] = funnel.get(key, 0) + value
    return CampaignResult(funnel=funnel, kept=kept, samples=samples, tasks=n_tasks, reused_tasks=reused,
                          seconds=round(seconds, 2), out=str(out), candidates_dir=str(out / CANDIDATES_DIR),
                          cifs_dir=str(out / CIFS_DIR), base_errors=base_errors, task_errors=task_errors)
