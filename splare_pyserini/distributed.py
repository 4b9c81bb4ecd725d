"""Encode a corpus on a Ray cluster: byte-identical to one process, whatever the number of workers.

The corpus is split into ``shard_num`` deterministic shards (:func:`~splare_pyserini.encode.shard_range`,
the ``--shard-id/--shard-num`` scheme); each shard is encoded by a Ray actor that loads the encoder once
and runs the one-process writer, :func:`~splare_pyserini.encode.encode_corpus`, on that shard. So every
file is exactly what ``--shard-id i --shard-num N`` writes in one process: chunk files are written under a
temporary name and renamed when complete, finished chunks are skipped on rerun, and a document's vector
never depends on which actor or batch encoded it. Queries are encoded one at a time by one actor after the
corpus (the same bytes as one process). An actor killed mid-shard is restarted by Ray and its shard task
retried (``max_restarts``/``max_task_retries``): the retry skips the chunks already renamed into place; a
killed driver takes its actors with it, and rerunning it resumes.

Ray is an optional extra (``pip install 'splare-pyserini[ray]'``) and is imported only here, only when a
Ray run is asked for.

    python -m splare_pyserini.encode --input scifact --output encode/scifact --ray local --shard-num 8
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .config import check_fields, option, require
from .errors import InputError, UserError
from .model.settings import EncoderSettings

log = logging.getLogger(__name__)
LOCAL, AUTO = "local", "auto"
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide a Ray run is; ``ray=None`` (the default) encodes in this process."""
    ray: str | None = option(None, "encode on Ray: 'local' starts a local Ray instance, 'auto' joins the cluster "
                                   "of this machine, anything else is a Ray address (host:port, ray://...); all "
                                   "--shard-num shards are encoded across the workers", metavar="ADDRESS")
    ray_workers: int | None = option(None, "Ray actors, each loading the encoder once (default: as many as the "
                                           "cluster's GPUs, or CPUs / --ray-cpus-per-worker, allow, at most one a "
                                           "shard)")
    ray_cpus_per_worker: float = option(1.0, "CPUs each actor reserves in Ray; also its torch threads (rounded "
                                             "up, at least 1)")
    ray_gpus_per_worker: float | None = option(None, "GPUs each actor reserves (default: 1 when the cluster has "
                                                     "GPUs, else 0); actors with a GPU encode on cuda")
    ray_max_retries: int = option(3, "restarts of a lost actor, and retries of its shard, before the run fails")

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.ray is None or bool(self.ray.strip()), "ray: an address, 'local' or 'auto'")
        require(self.ray_workers is None or self.ray_workers >= 1,
                f"ray_workers: must be >= 1, got {self.ray_workers}")
        require(self.ray_cpus_per_worker > 0, f"ray_cpus_per_worker: must be > 0, got {self.ray_cpus_per_worker}")
        require(self.ray_gpus_per_worker is None or self.ray_gpus_per_worker >= 0,
                f"ray_gpus_per_worker: must be >= 0, got {self.ray_gpus_per_worker}")
        require(self.ray_max_retries >= 0, f"ray_max_retries: must be >= 0, got {self.ray_max_retries}")


def import_ray():
    """``ray``, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray, an optional extra: pip install 'splare-pyserini[ray]' "
                         "(or pip install -e '.[ray]' in a clone)") from None
    return ray


def connect(address: str, **local_options) -> bool:
    """Join (or, for ``local``, start) a Ray instance; True when this call did, so the caller shuts it down.

    A process already connected to Ray (``ray.init`` called before) keeps its instance."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True}
    try:
        if address == LOCAL:
            ray.init(address=LOCAL, include_dashboard=False, **local_options, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise InputError(f"--ray {address}: cannot join a Ray cluster there ({str(err).splitlines()[0]})") from None
    return True


class ShardSlice(Sequence):
    """The records of one shard, seen as the whole corpus by :func:`encode_corpus`: ``len`` is the corpus
    size (so shard ranges and ``encode_info.json`` are those of one process) but only the shard's records
    travel to the actor."""

    def __init__(self, records: Sequence, start: int, total: int):
        self.records, self.start, self.total = list(records), start, total

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, index):
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("a shard is read by contiguous slices")
        lo, hi, _ = index.indices(self.total)
        if lo < hi and not (self.start <= lo and hi <= self.start + len(self.records)):
            raise IndexError(f"[{lo}:{hi}] is outside this shard [{self.start}:{self.start + len(self.records)}]")
        return self.records[lo - self.start:hi - self.start]


class ShardWorker:
    """A Ray actor's body: the encoder, loaded once, then one shard (or the queries) per call."""

    def __init__(self, settings: EncoderSettings, device: str, threads: int):
        import torch

        from .model.encoder import SaeSparseEncoder

        torch.set_num_threads(threads)
        self.board, self.error = None, None
        try:
            self.encoder = SaeSparseEncoder(settings, device=device)
        except UserError as err:  # raised by the first call: the driver shows it as one line
            self.error = err

    def _ready(self) -> None:
        if self.error is not None:
            raise self.error

    def encode_shard(self, records: ShardSlice, output: str, shard_id: int, shard_num: int, batch_size: int,
                     chunk_size: int, source: str, board=None):
        from .encode import encode_corpus

        self._ready()
        self.board = board
        done, last, where = 0, 0.0, worker_name()
        if self.board is not None:
            self.board.report.remote(shard_id, 0, where)

        def progress(n: int) -> None:
            nonlocal done, last
            done += n
            if self.board is not None and time.monotonic() - last > 0.2:
                last = time.monotonic()
                self.board.report.remote(shard_id, done, where)

        summary = encode_corpus(records, output, self.encoder, batch_size, shard_id, shard_num, chunk_size,
                                source=source, progress=progress, show_progress=False, clean_temps=False)
        if self.board is not None:
            self.board.report.remote(shard_id, done, where)
        return summary

    def encode_queries(self, records: Sequence, output: str, source: str):
        from .encode import encode_queries

        self._ready()
        return encode_queries(records, output, self.encoder, source=source, show_progress=False)


def worker_name() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


class ProgressBoard:
    """Documents done per shard (a retried shard reports afresh, so nothing is counted twice) and which
    worker process holds each shard; ``poll`` returns the total and the (shard, old, new worker) changes."""

    def __init__(self):
        self.done: dict[int, int] = {}
        self.where: dict[int, str] = {}
        self.changes: list[tuple[int, str | None, str]] = []

    def report(self, shard: int, done: int, where: str) -> None:
        self.done[shard] = done
        if self.where.get(shard) != where:
            self.changes.append((shard, self.where.get(shard), where))
            self.where[shard] = where

    def poll(self) -> tuple[int, list]:
        changes, self.changes = self.changes, []
        return sum(self.done.values()), changes


def _plan_workers(ray, settings: RaySettings, items: int, device: str) -> tuple[int, float, float, str]:
    """(workers, CPUs and GPUs per worker, the actors' device), checked against the cluster."""
    resources = ray.cluster_resources()
    cpus, gpus_total = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    gpus = settings.ray_gpus_per_worker
    if gpus is None:
        gpus = 1.0 if gpus_total >= 1 else 0.0
    if device.startswith("cuda") and gpus == 0:
        raise InputError(f"--device {device} with --ray: the cluster has no GPU "
                         f"(or --ray-gpus-per-worker 0 was given)")
    if device not in ("cpu", "cuda") and not device.startswith("cuda"):
        raise InputError(f"--device {device} with --ray: each worker uses cuda when it has a GPU, else cpu")
    per_cpu = settings.ray_cpus_per_worker
    capacity = int(cpus // per_cpu + 1e-9)
    if gpus > 0:
        capacity = min(capacity, int(gpus_total // gpus + 1e-9))
    if capacity < 1:
        raise InputError(f"the Ray cluster cannot hold one worker ({per_cpu:g} CPU, {gpus:g} GPU; it has "
                         f"{cpus:g} CPU, {gpus_total:g} GPU)")
    workers = settings.ray_workers or min(capacity, items)
    if workers > capacity:
        raise InputError(f"--ray-workers {workers} needs {workers * per_cpu:g} CPU and {workers * gpus:g} GPU; "
                         f"the cluster has {cpus:g} CPU and {gpus_total:g} GPU (fewer workers, or a smaller "
                         f"--ray-cpus-per-worker)")
    return min(workers, max(items, 1)), per_cpu, gpus, ("cuda" if gpus > 0 else "cpu")


def _user_error(ray, err: Exception) -> Exception:
    """The user error a worker raised (one line), else ``err``."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, UserError):
        return cause
    if isinstance(err, ray.exceptions.RayActorError):
        return UserError(f"a Ray worker was lost more than --ray-max-retries times or could not start: "
                         f"{str(err).strip().splitlines()[0]}")
    return err


def _summary_plus(total, part) -> None:
    total.add_counts({"encoded": part.encoded, "empty": part.empty, "truncated": part.truncated,
                      "nonzeros": part.nonzeros})
    total.reused_chunks += part.reused_chunks


def encode_on_ray(corpus: Sequence, queries: Sequence, output: str | Path,
                  settings: EncoderSettings = EncoderSettings(), shard_num: int = 1,
                  ray_settings: RaySettings = RaySettings(ray=LOCAL), *, batch_size: int = 32,
                  chunk_size: int | None = None, source: str = "", device: str = "cpu",
                  progress: bool = True, local_options: dict | None = None) -> dict:
    """Encode a corpus (all ``shard_num`` shards) and queries on Ray; {"corpus"/"queries": EncodeSummary}.

    The output folder holds what one process writes for ``--shard-id 0..N-1 --shard-num N`` (queries
    with shard 0), byte for byte. ``local_options`` go to ``ray.init`` when a local instance is started
    (e.g. ``num_cpus``, ``object_store_memory``)."""
    from tqdm import tqdm

    from .encode import DEFAULT_CHUNK, EncodeSummary, shard_range
    from .io import remove_stale_temps

    require(shard_num >= 1, f"shard_num: must be >= 1, got {shard_num}")
    chunk_size = chunk_size or DEFAULT_CHUNK
    address = ray_settings.ray or LOCAL
    ray = import_ray()
    output = Path(output)
    started = connect(address, **(local_options or {}))
    actors: list = []
    board = None
    try:
        ranges = [shard_range(len(corpus), s, shard_num) for s in range(shard_num)] if corpus else []
        shards = [s for s, (start, end) in enumerate(ranges) if start < end]  # more shards than documents
        n_workers, cpus, gpus, actor_device = _plan_workers(ray, ray_settings, max(len(shards), 1), device)
        threads = max(1, math.ceil(cpus))
        retries = ray_settings.ray_max_retries
        board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        worker_cls = ray.remote(ShardWorker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=retries,
                                                     max_task_retries=retries)
        actors = [worker_cls.remote(settings, actor_device, threads) for _ in range(n_workers)]
        log.info("Ray %s: %d worker(s) × %g CPU, %g GPU (%s, %d torch thread(s)); %d shard(s) of %d documents",
                 address, n_workers, cpus, gpus, actor_device, threads, len(shards), len(corpus))
        for folder in (output, output / "corpus", output / "stats"):  # a killed run's leftovers
            remove_stale_temps(folder)
        result = {}
        if shards:
            result["corpus"] = _run_shards(ray, tqdm, actors, board, corpus, shards, shard_num, output, batch_size,
                                           chunk_size, source, progress, EncodeSummary)
        if queries:
            try:
                result["queries"] = ray.get(actors[0].encode_queries.remote(list(queries), str(output), source))
            except ray.exceptions.RayError as err:
                raise _user_error(ray, err) from None
        for folder in (output, output / "corpus", output / "stats"):  # temporaries of workers lost and retried
            remove_stale_temps(folder)
        return result
    finally:
        for actor in actors + ([board] if board is not None else []):
            ray.kill(actor)
        if started:
            ray.shutdown()


def _run_shards(ray, tqdm, actors, board, corpus, shards, shard_num, output, batch_size, chunk_size, source,
                progress, summary_cls):
    from .encode import shard_range

    def submit(actor, shard: int):
        start, end = shard_range(len(corpus), shard, shard_num)
        piece = ShardSlice(corpus[start:end], start, len(corpus))
        return actor.encode_shard.remote(piece, str(output), shard, shard_num, batch_size, chunk_size, source,
                                         board)

    todo = list(shards)
    pending = {}
    for actor in actors:
        if todo:
            pending[submit(actor, todo.pop(0))] = actor
    total = summary_cls()
    finished, began, first = 0, time.perf_counter(), None
    with tqdm(total=len(corpus), desc=f"ray encode ({len(actors)} worker(s))", unit="doc", dynamic_ncols=True,
              disable=not progress) as bar:
        bar.set_postfix(shards=f"0/{len(shards)}")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                actor = pending.pop(ref)
                try:
                    _summary_plus(total, ray.get(ref))
                except ray.exceptions.RayError as err:
                    raise _user_error(ray, err) from None
                finished += 1
                bar.set_postfix(shards=f"{finished}/{len(shards)}")
                if todo:
                    pending[submit(actor, todo.pop(0))] = actor
            try:
                done, changes = ray.get(board.poll.remote(), timeout=5)
            except ray.exceptions.GetTimeoutError:
                continue
            bar.update(max(0, min(done, len(corpus)) - bar.n))
            if first is None and done > 0:
                first = time.perf_counter()
            for shard, old, new in changes:
                if old is None:
                    log.info("shard %d/%d: started on worker %s", shard, shard_num, new)
                else:
                    log.warning("shard %d/%d: worker %s lost; resumed on worker %s (finished chunks kept)",
                                shard, shard_num, old, new)
    ended = time.perf_counter()
    if first is not None and total.encoded and not total.reused_chunks:
        log.info("%d documents in %.1f s on %d worker(s): %.1f docs/s from the first document on (%.1f s before "
                 "it: Ray workers starting and loading the model)", total.encoded, ended - began, len(actors),
                 total.encoded / max(ended - first, 1e-9), first - began)
    return total


def encode_corpus_on_ray(records: Sequence, output: str | Path, settings: EncoderSettings = EncoderSettings(),
                         shard_num: int = 1, workers: int | None = None, address: str = LOCAL, **kwargs):
    """Encode all ``shard_num`` shards of a corpus on Ray (``workers`` actors); the corpus EncodeSummary.

    ``kwargs``: ``batch_size``, ``chunk_size``, ``source``, ``device``, ``progress``, ``local_options`` (see
    :func:`encode_on_ray`), and ``cpus_per_worker``, ``gpus_per_worker``, ``max_retries``."""
    ray_settings = RaySettings(ray=address, ray_workers=workers,
                               ray_cpus_per_worker=kwargs.pop("cpus_per_worker", 1.0),
                               ray_gpus_per_worker=kwargs.pop("gpus_per_worker", None),
                               ray_max_retries=kwargs.pop("max_retries", 3))
    return encode_on_ray(records, [], output, settings, shard_num, ray_settings, **kwargs)["corpus"]
