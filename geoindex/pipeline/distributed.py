"""The build on a Ray cluster (``build_index --ray``): shards encoded by a pool of Ray actors, codes
added per shard in Ray tasks against the trained empty index.

Ray is the engine: its actors, restarts and task retries, not a home-made pool. Each encoder actor
loads the location encoder once (on a GPU when the cluster has them, else with one CPU thread per
actor) and hands back a shard's vectors and metadata; the driver writes them as the same shard
files the one-process build writes, so a killed driver resumes from them exactly as it does, and
no worker needs the driver's disk. An actor whose process dies is restarted and its shard retried
by Ray (``max_restarts``, ``max_task_retries``); shard files are written whole or not at all.

Adding codes: the driver trains once; every IVF part (a run of consecutive shards) is added in a
task to a copy of the trained empty index and comes back as its inverted lists' bytes. Parts are
merged in shard order (into the index's lists, or into ``OnDiskInvertedLists``), which appends
each list's entries in the order a one-process add would: the same ids, codes and lists, byte for
byte.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from geoindex.atomic import check_free
from geoindex.errors import InvalidArgumentError
from geoindex.index.io import stdout_to_stderr

log = logging.getLogger(__name__)

# Fault injection for the tests (a killed worker must be retried): when set, an encoder actor handed
# shard KEY, or the task filling part N (KEY partNNNNN), while DIR/KEY.kill exists renames it to
# KEY.killed and kills its own process.
KILL_ENV = "GEOINDEX_RAY_KILL_DIR"
ACTOR_RESTARTS = 4
# Vectors per add task: enough work to amortise the trained index each task deserialises (~40 MB
# at res 7), few enough that a part's vectors and codes stay small beside the driver (500K parts
# took a res-5 one-process build's peak RSS from ~1.5 to 3.6 GiB).
PART_VECTORS = 100_000


def connect(address: str) -> dict[str, float]:
    """Join a Ray cluster and return its resources. ``address`` ``"auto"``: the cluster this process
    already joined, else ``$RAY_ADDRESS``, else a new local one (all cores); anything else is a
    cluster address (``ray://host:10001``, ``host:6379``)."""
    try:
        import ray
    except ImportError:
        raise InvalidArgumentError("--ray needs Ray: pip install 'ray>=2.9' (or drop --ray to build in "
                                   "this process)") from None
    if not ray.is_initialized():
        target = None if address == "auto" else address
        try:
            ray.init(address=target, include_dashboard=False, log_to_driver=True,
                     logging_level=logging.WARNING, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = target or os.environ.get("RAY_ADDRESS") or "a new local cluster"
            raise InvalidArgumentError(f"--ray: cannot join {where} ({e}): start it with `ray start --head`, "
                                       "give its address (--ray HOST:6379), or drop --ray") from None
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def actor_plan(resources: dict[str, float], device: str) -> tuple[int, str]:
    """(encoder actors, their device type): one CUDA actor per GPU when the cluster has GPUs and
    ``device`` is auto or cuda, else one single-threaded CPU actor per CPU."""
    gpus = int(resources.get("GPU", 0))
    if device.startswith("cuda") or (device == "auto" and gpus):
        if not gpus:
            raise InvalidArgumentError(f"--device {device} asks for CUDA but the Ray cluster has no GPU: "
                                       "use --device cpu (or auto)")
        return gpus, "cuda"
    return max(1, int(resources.get("CPU", 1))), "cpu"


def _encoder_actor_class():
    import ray

    @ray.remote
    class ShardEncoder:
        """Holds the location encoder; encodes whole shards."""

        def __init__(self, device: str, precision: str, threads: int, state: dict | None):
            import torch

            from geoindex.encoders.location import load_location_encoder, pick_device

            torch.set_num_threads(threads)
            self.model = load_location_encoder(pick_device(device), precision, state=state)

        def encode(self, key: str, job: Callable, batch_size: int, resolution: int | None, dtype: str):
            maybe_die(key)
            return (key, *encode_shard(self.model, job, batch_size, resolution, np.dtype(dtype)))

    return ShardEncoder


def maybe_die(key: str) -> None:
    """Tests: exit this worker process when the folder in $GEOINDEX_RAY_KILL_DIR holds ``key``.kill (once)."""
    folder = os.environ.get(KILL_ENV)
    if not folder:
        return
    mark = Path(folder) / f"{key}.kill"
    try:
        os.replace(mark, mark.with_suffix(".killed"))
    except FileNotFoundError:
        return
    os._exit(1)  # the whole worker process, as the OOM killer or a lost node would


def encode_shard(model, make_batch: Callable, batch_size: int, resolution: int | None,
                 dtype: np.dtype) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """One shard: its gallery cells (``make_batch()``), their vectors in ``dtype`` and metadata, and
    the seconds each step took. The one-process build and the Ray actors both run this."""
    from geoindex.constants import EMBED_DIM
    from geoindex.encoders.location import encode_latlng
    from geoindex.store.cells_db import shard_metadata

    seconds = {}
    t = time.perf_counter()
    batch = make_batch()
    seconds["enumerate"] = time.perf_counter() - t
    t = time.perf_counter()
    vectors = encode_latlng(model, batch.latlng, batch_size) if len(batch) else np.empty((0, EMBED_DIM), np.float32)
    seconds["encode"] = time.perf_counter() - t
    t = time.perf_counter()
    meta = shard_metadata(batch, resolution)
    seconds["geocode"] = time.perf_counter() - t
    return vectors.astype(dtype, copy=False), meta, seconds


def encode_on_ray(jobs: list[tuple[Any, Callable]], actors: int, device: str, precision: str,
                  batch_size: int, resolution: int | None, dtype: np.dtype, state: dict | None = None
                  ) -> Iterator[tuple[Any, np.ndarray, dict, dict]]:
    """Encode ``jobs`` ((shard, make_batch) pairs) on up to ``actors`` encoder actors; yield (shard,
    vectors, metadata, seconds) as shards finish, in any order. Ray restarts a dead actor and
    retries its shard; the actors are gone when this returns. ``state``: the location encoder's
    state dict, put in the object store once so that every actor encodes with the driver's
    weights (no node needs the weights folder); None: each loads the weights it finds."""
    import ray
    from ray.util import ActorPool

    if not jobs:
        return
    encoder = _encoder_actor_class().options(
        num_cpus=1, num_gpus=1 if device == "cuda" else 0,
        max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
    state_ref = None if state is None else ray.put(state)
    handles = [encoder.remote(device, precision, 1, state_ref) for _ in range(min(actors, len(jobs)))]
    shards = {shard.key: shard for shard, _ in jobs}
    try:
        pool = ActorPool(handles)  # hands the next shard to whichever actor is free
        results = pool.map_unordered(
            lambda actor, job: actor.encode.remote(job[0].key, job[1], batch_size, resolution, dtype.str), jobs)
        for key, vectors, meta, seconds in results:
            yield shards[key], vectors, meta, seconds
    finally:
        for actor in handles:
            ray.kill(actor)


def part_runs(counts: list[int], size: int | None = None) -> list[list[int]]:
    """Consecutive shard numbers grouped into parts of about ``size`` vectors (empty shards left
    out): the grain of the parallel add, fixed by the shards alone so a resume finds the same parts."""
    size = PART_VECTORS if size is None else size
    parts, run, held = [], [], 0
    for i, count in enumerate(counts):
        if not count:
            continue
        run.append(i)
        held += count
        if held >= size:
            parts.append(run)
            run, held = [], 0
    return parts + ([run] if run else [])


def fill_part(trained: bytes | np.ndarray, ids: np.ndarray, xb: np.ndarray, lists: np.ndarray | None) -> np.ndarray:
    """The trained empty index (FAISS bytes) with one part's vectors added; the bytes of its inverted
    lists alone (FAISS's ``write_InvertedLists``): the coarse centroids, 30 MB at res 7, are the
    trained index's and need not travel back with every part."""
    from geoindex.index.builder import add_vectors

    index = faiss.deserialize_index(np.asarray(trained))
    add_vectors(index, xb, ids, lists)
    writer = faiss.VectorIOWriter()
    faiss.write_InvertedLists(index.invlists, writer)
    return faiss.vector_to_array(writer.data)


def fill_parts(trained: faiss.Index, loaders: list[tuple[int, Callable]], ray_workers: int | None
               ) -> Iterator[tuple[int, np.ndarray]]:
    """(part number, inverted-list bytes of the filled part) for each (number, loader) in ``loaders``, where
    ``loader()`` gives the part's (ids, vectors, lists or None). In this process when
    ``ray_workers`` is None, else as Ray tasks (``ray_workers`` at a time, retried when a worker
    dies); results come in any order."""
    blob = faiss.serialize_index(trained)
    if ray_workers is None:
        for number, loader in loaders:
            yield number, fill_part(blob, *loader())
        return
    import ray

    task = ray.remote(num_cpus=1, max_retries=ACTOR_RESTARTS)(_fill_part_task)
    blob_ref = ray.put(blob)
    pending: dict = {}
    queue = iter(loaders)
    while True:
        while len(pending) < 2 * ray_workers and (item := next(queue, None)) is not None:
            number, loader = item
            pending[task.remote(blob_ref, *loader(), f"part{number:05d}")] = number  # two in flight per worker
        if not pending:
            return
        done, _ = ray.wait(list(pending), num_returns=1)
        yield pending.pop(done[0]), ray.get(done[0])


def _fill_part_task(trained, ids, xb, lists, key: str):
    maybe_die(key)
    faiss.omp_set_num_threads(1)  # one Ray CPU, one thread
    return fill_part(trained, ids, xb, lists)


def merge_parts(trained: faiss.Index, part_files: list[Path], lists_file: Path | None) -> faiss.Index:
    """``trained`` (an empty IndexIVF) holding the lists of every part file, parts taken in order so
    each list's entries come in the order a one-process add gives. ``lists_file``: the merged lists
    go there on disk, the parts memory-mapped (FAISS ``OnDiskInvertedLists``, as
    ``faiss.contrib.ondisk.merge_ondisk`` does; named relative to the index so its directory can
    move), else into the index's in-memory lists."""
    if lists_file is None:  # InvertedLists.merge_from empties its source: load each part (small), merge, drop
        for f in part_files:
            part = faiss.read_InvertedLists(faiss.FileIOReader(str(f)), 0)
            trained.ntotal += part.compute_ntotal()
            trained.invlists.merge_from(part, 0)
            del part
        return trained
    readers = [faiss.FileIOReader(str(f)) for f in part_files]
    parts = [faiss.read_InvertedLists(r, faiss.IO_FLAG_MMAP) for r in readers]  # mapped, not loaded
    # FAISS writes the merged lists through a map of a sparse file: room is checked first (a full disk is SIGBUS)
    check_free(lists_file, sum(p.compute_ntotal() for p in parts) * (trained.code_size + 8),
               "free space on that disk and run the same command again: the finished shards and parts are resumed from")
    with stdout_to_stderr():  # FAISS prints "resizing <file> to N bytes" on stdout: keep it the answer's
        ondisk = faiss.OnDiskInvertedLists(trained.nlist, trained.code_size, str(lists_file))
        pointers = faiss.InvertedListsPtrVector()
        for part in parts:
            pointers.push_back(part)
        trained.ntotal = ondisk.merge_from_multiple(pointers.data(), pointers.size(), False)
    trained.replace_invlists(ondisk, True)
    ondisk.this.disown()  # the index owns it now
    ondisk.filename = lists_file.name
    del parts, readers
    return trained
