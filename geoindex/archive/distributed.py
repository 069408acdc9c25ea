"""The archive on a Ray cluster (``geoindex locate DIR --out FILE --ray [ADDRESS]``): the photos
not yet done are split into shards, and a pool of encoder actors decodes, encodes and searches
them; the driver commits the rows as Parquet parts exactly as the one-process run does.

Ray is the engine, as for the build (:mod:`geoindex.pipeline.distributed`, whose ``connect``,
``actor_plan`` and kill switch this reuses): ``ray.util.ActorPool`` hands the next shard to
whichever actor is free, and an actor whose process dies is restarted and its shard retried
(``max_restarts``, ``max_task_retries``). Each actor opens the index and loads CLIP once (one
CUDA actor per GPU, else one per CPU) and reads the photos itself: every node must see them under
the same paths. Rows travel back through the object store; only the driver writes, so resume,
Ctrl-C and kill -9 behave as in one process: the rows of a shard are committed when it comes back,
and a later run redoes only the shards that had not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from geoindex.archive.runner import ArchiveConfig
from geoindex.errors import GeoindexError, InvalidArgumentError
from geoindex.pipeline.distributed import ACTOR_RESTARTS, actor_plan, connect, maybe_die

log = logging.getLogger(__name__)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a cluster address (``host:port`` or ``ray://host:port``; ``auto``: ``$RAY_ADDRESS`` if
    set) whose port does not answer within ``timeout_s``: ``ray.init`` would wait for it without end."""
    import os
    import socket

    target = os.environ.get("RAY_ADDRESS", "") if address == "auto" else address
    hostport = target.removeprefix("ray://")
    if not hostport or hostport in ("auto", "local") or ":" not in hostport:
        return  # a new local cluster, or the one this machine runs: Ray finds it
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as e:
        raise InvalidArgumentError(
            f"--ray {target!r}: nothing answers there ({e}): start the cluster with `ray start --head`, give its "
            "address (--ray HOST:6379, or ray://HOST:10001), or drop --ray") from None


def geoindex_cause(error: BaseException) -> GeoindexError | None:
    """The GeoindexError an actor raised, out of the Ray error that carries it (a failed task's
    RayTaskError has it as ``cause``; a failed constructor's ActorDiedError has that RayTaskError
    as its first argument)."""
    for _ in range(4):
        if isinstance(error, GeoindexError) and not hasattr(error, "cause"):
            return error
        inner = getattr(error, "cause", None)
        if inner is None and getattr(error, "args", None) and isinstance(error.args[0], BaseException):
            inner = error.args[0]
        if inner is None:
            return None
        error = inner
    return None


def shards_of(paths: list[str], size: int) -> list[tuple[str, list[str]]]:
    """(key, paths) runs of ``size`` consecutive paths; keys ``archive-000000``... in listing order."""
    return [(f"archive-{i // size:06d}", paths[i:i + size]) for i in range(0, len(paths), size)]


def _actor_class():
    import ray

    @ray.remote
    class ShardLocator:
        """Holds one Geolocator and one image encoder; turns whole shards of photo paths into rows."""

        def __init__(self, config: ArchiveConfig, open_geolocator: Callable, load_encoder: Callable, options,
                     threads: int | None):
            from geoindex.archive.runner import _Batcher, reader

            if threads is not None:
                import torch

                torch.set_num_threads(threads)
            self.config = config
            self.batcher = _Batcher(config, open_geolocator(), options, load_encoder)
            self.read = reader(config, self.batcher)

        def rows(self, key: str, paths: list[str]) -> tuple[str, list[dict]]:
            from geoindex.archive.pipeline import decoded_batches

            maybe_die(key)
            out: list[dict] = []
            for batch in decoded_batches(paths, self.read, self.config.batch_size, self.config.workers):
                out += self.batcher.rows(batch)
            return key, out

    return ShardLocator


def located_on_ray(config: ArchiveConfig, open_geolocator: Callable, load_encoder: Callable, options,
                   address: str = "auto", device: str = "auto", shard_size: int | None = None
                   ) -> Callable[[list[str]], Iterator[list[dict]]]:
    """The ``located`` hook of :func:`geoindex.archive.runner.run_archive` on Ray. Joins the cluster
    now (an address that cannot be reached is refused before anything loads: InvalidArgumentError);
    the actors start only when there are photos to do. ``shard_size``: photos a shard (default
    ``config.commit_rows``: a shard is about one committed part). The callables and ``options``
    are sent to every actor, which calls them there."""
    check_reachable(address)
    resources = connect(address)
    actors, kind = actor_plan(resources, device)
    size = max(1, shard_size or config.commit_rows)

    def located(todo: list[str]) -> Iterator[list[dict]]:
        import ray
        from ray.util import ActorPool

        shards = shards_of(todo, size)
        if not shards:
            return
        cls = _actor_class().options(num_cpus=1, num_gpus=1 if kind == "cuda" else 0,
                                     max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
        n = min(actors, len(shards))
        log.info("archive on Ray: %d shards of up to %d photos on %d %s actors", len(shards), size, n, kind)
        handles = [cls.remote(config, open_geolocator, load_encoder, options, 1 if kind == "cpu" else None)
                   for _ in range(n)]
        try:
            pool = ActorPool(handles)
            for _key, rows in pool.map_unordered(lambda actor, shard: actor.rows.remote(*shard), shards):
                yield rows
        except ray.exceptions.RayError as e:  # an actor refused (no index, bad options): its own one-line error
            cause = geoindex_cause(e)
            if cause is None:
                raise
            raise cause from None
        finally:
            for actor in handles:
                ray.kill(actor)

    return located
