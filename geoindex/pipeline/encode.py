"""Stage 1 of the build: enumerate, encode and describe every gallery shard not yet on disk.

Each shard (the cells below one H3 root, or a run of CSV rows) is encoded in this process or on
the Ray actors of the plan, and written whole as a shard file (:mod:`geoindex.store.shards`): a
build that dies resumes from exactly the shards it finished.
"""

from __future__ import annotations

import time
from functools import partial

import h3
import numpy as np
from tqdm.auto import tqdm

from geoindex.pipeline import distributed
from geoindex.pipeline.memory import StageMemory
from geoindex.pipeline.plan import BuildPlan
from geoindex.cells import csv_gallery, gallery
from geoindex.cells.countries import cell_radius_km, point_countries
from geoindex.cells.region import RegionFilter, cells_inside, shard_roots_in
from geoindex.store.shards import ShardFile, shard_files


class Timer:
    """Seconds per build step, summed over calls (the manifest's ``timings_s``), and, given a
    :class:`~geoindex.pipeline.memory.StageMemory`, the driver's peak memory per stage."""

    def __init__(self, memory: StageMemory | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.memory = memory

    def begin(self, stage: str) -> float:
        """Mark the start of ``stage`` (memory samples are charged to it); returns the start time."""
        if self.memory is not None:
            self.memory.stage(stage)
        return time.perf_counter()

    def add(self, name: str, start: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def progress_bar(plan: BuildPlan, total: int, desc: str, unit: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not plan.progress,
                dynamic_ncols=True, mininterval=1.0)


def shard_jobs(plan: BuildPlan) -> list[tuple[ShardFile, partial, int]]:
    """(shard file, the function that makes its cells, cells scanned) for every shard of the gallery."""
    folder = plan.work / "shards"
    if plan.csv_latlng is not None:
        parts = dict(csv_gallery.csv_shards(plan.csv_latlng))
        shards = shard_files(folder, [f"rows{k:06d}" for k in parts])
        return [(s, partial(_given, parts[k]), len(parts[k])) for s, k in zip(shards, parts)]
    roots = gallery.h3_shard_roots(plan.resolution)
    if plan.region:
        roots = shard_roots_in(plan.region, roots, plan.resolution)
    shards = shard_files(folder, [h3.int_to_str(r) for r in roots])
    return [(s, partial(h3_batch, r, plan.resolution, plan.cells, plan.region),
             h3.cell_to_children_size(h3.int_to_str(r), plan.resolution)) for s, r in zip(shards, roots)]


def encode_shards(plan: BuildPlan, model, state: dict, timer: Timer) -> list[ShardFile]:
    """Write every shard file not yet on disk; return all of them in gallery order. ``model``:
    the driver's encoder (one process); ``state``: the encoder's weights, for the Ray actors."""
    jobs = shard_jobs(plan)
    total = sum(scanned for _, _, scanned in jobs)
    scanned_of = {s.key: scanned for s, _, scanned in jobs}
    dtype = np.dtype(plan.spill_dtype)
    todo = [(s, make_batch) for s, make_batch, _ in jobs if not s.exists()]
    with progress_bar(plan, total, "encode gallery", "cell") as bar:
        kept = sum(s.count() for s, _, _ in jobs if s.exists())
        bar.update(total - sum(scanned_of[s.key] for s, _ in todo))
        if plan.ray_actors is None:
            done = ((s, *distributed.encode_shard(model, make_batch, plan.batch_size, plan.resolution, dtype))
                    for s, make_batch in todo)
        else:
            done = distributed.encode_on_ray(todo, plan.ray_actors, plan.encode_device_type, plan.precision,
                                             plan.batch_size, plan.resolution, dtype, state)
        for shard, vectors, meta, seconds in done:
            t = time.perf_counter()
            shard.write(vectors, meta)
            timer.add("write_shards", t)
            for step, sec in seconds.items():
                timer.seconds[step] = timer.seconds.get(step, 0.0) + sec
            kept += len(meta["cell"])
            bar.update(scanned_of[shard.key])
            bar.set_postfix(kept=f"{kept:,}", refresh=False)
    return [s for s, _, _ in jobs]


def _given(batch: gallery.CellBatch) -> gallery.CellBatch:
    return batch


def h3_batch(root: int, resolution: int, cells: str, region: RegionFilter | None) -> gallery.CellBatch:
    """One shard's gallery cells, only those inside ``region`` when there is one."""
    batch = gallery.h3_shard(root, resolution, cells)
    if not region or not len(batch):
        return batch
    country = point_countries(batch.lat, batch.lng, cell_radius_km(resolution)) if region.countries else None
    keep = cells_inside(region, batch.cell, batch.lat, batch.lng, country)
    return gallery.CellBatch(batch.cell[keep], batch.lat[keep], batch.lng[keep], batch.is_land[keep])
