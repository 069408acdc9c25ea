"""CLIP features encoded on a Ray cluster (``geoindex build --photos CSV --ray``): a pool of encoder
actors, one per GPU when the cluster has GPUs, else one single-threaded actor per CPU, each holding
the CLIP image tower and encoding whole shards of the feature cache.

The patterns are the cell build's (:mod:`geoindex.pipeline.distributed`): :func:`connect` joins or starts
the cluster, :func:`actor_plan` sizes the pool, Ray restarts a dead actor and retries its shard, and
the driver writes every shard it gets back, whole, into the cache folder. So a cache made on Ray is
the cache one process makes (same layout, fingerprint and shards), and a killed build resumes from
its shards with or without Ray. Workers read the photos themselves: their paths must be readable
on every node (a local cluster, or a shared filesystem).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from geoindex.pipeline import image_shards
from geoindex.pipeline.photo_csv import Photos


class _Silent:
    """The progress bar an actor's encoder updates (the driver shows progress per shard)."""

    def update(self, _n: int) -> None:
        pass


def _actor_class():
    import ray

    @ray.remote
    class PhotoShardEncoder:
        """Holds the CLIP image tower; encodes whole shards of photos."""

        def __init__(self, clip_model: str, clip_checkpoint: str | None, device: str, threads: int, options: dict):
            import torch

            from geoindex.encoders.clip import load_clip
            from geoindex.encoders.location import pick_device

            torch.set_num_threads(threads)
            dev = pick_device(device)
            clip, preprocess, _ = load_clip(clip_model, clip_checkpoint, dev)
            self.encoder = image_shards.ImageShardEncoder(clip, preprocess, dev, options["batch_size"], options["views"], options["seed"],
                                    options["max_pixels"], options["strict"], 2, options["dtype"])

        def encode(self, number: int, images: list[str], lines: list[int], start: int):
            """Shard ``number`` (rows ``start``...): (number, feats, CSV rows kept, skipped)."""
            import torch

            from geoindex.pipeline.distributed import maybe_die

            maybe_die(f"photos{number:05d}")
            photos = Photos([Path(p) for p in images], np.zeros((len(images), 2)), np.asarray(lines, np.int64), "")
            with torch.inference_mode():
                feats, ok, skipped = self.encoder.shard(photos, np.arange(len(images)), _Silent())
            return number, feats, ok + start, skipped

    return PhotoShardEncoder


def encode_features_on_ray(address: str, photos: Photos, out: Path, todo: list[int], shard_rows: int, progress: bool,
                  *, clip_model: str, clip_checkpoint: str | None, device: str, **options) -> tuple[int, float, str]:
    """Encode the shards ``todo`` of ``photos`` on Ray actors and write each into the cache ``out``
    as it comes back; returns (photos encoded, seconds, the encoders as the cache records them).
    ``options``: the encoder's batch_size, views, seed, max_pixels, strict and dtype."""
    import ray
    from ray.util import ActorPool
    from tqdm import tqdm

    from geoindex.pipeline.distributed import ACTOR_RESTARTS, actor_plan, connect

    actors, kind = actor_plan(connect(address), device)
    label = f"{min(actors, max(len(todo), 1))} Ray {kind} actors"
    start, encoded = time.perf_counter(), 0
    if not todo:
        return 0, 0.0, label
    encoder = _actor_class().options(num_cpus=1, num_gpus=1 if kind == "cuda" else 0,
                                     max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
    handles = [encoder.remote(clip_model, clip_checkpoint, kind, 1, options) for _ in range(min(actors, len(todo)))]

    def submit(actor, s: int):
        lo, hi = s * shard_rows, min(len(photos), (s + 1) * shard_rows)
        return actor.encode.remote(s, [str(p) for p in photos.images[lo:hi]], photos.lines[lo:hi].tolist(), lo)

    try:
        with tqdm(total=sum(min(shard_rows, len(photos) - s * shard_rows) for s in todo), unit="img",
                  disable=not progress, desc=f"features ({label})") as bar:
            for s, feats, ok, skipped in ActorPool(handles).map_unordered(submit, todo):
                image_shards.write_shard(image_shards.shard_dir(out, s), feats, photos.latlng[ok], ok, skipped)
                encoded += len(ok)
                bar.update(len(ok) + len(skipped))
    finally:
        for actor in handles:
            ray.kill(actor)
    return encoded, time.perf_counter() - start, label
