"""The streaming, resumable index builder behind ``geoindex build``.

Stages: plan (every argument checked and decided, :mod:`.plan`) -> gallery shards -> location
encoder -> shard files (vectors + metadata, spilled to disk, :mod:`.encode`) -> the index chosen,
trained on a sample and filled shard by shard (:mod:`.index_stage`, :mod:`.parts`) -> self-check
-> FAISS file, DuckDB ``cells``, hot columns, store, manifest (:mod:`.write`) -> publish.

Everything is written under a hidden sibling ``.<name>.partial/`` of the output directory
(:mod:`.workdir`); it becomes the index directory in one rename only when complete, so no reader
ever sees half an index. A build that dies keeps its finished shards there, and the same build
resumes from them and produces the same index (same shards, same seeded sample, same add order).
"""

from __future__ import annotations

import logging
import shutil
import time

import torch

from geoindex.atomic import write_error
from geoindex.pipeline import index_stage, parts, write
from geoindex.pipeline.config import BuildConfig, BuildResult
from geoindex.pipeline.encode import Timer, encode_shards
from geoindex.pipeline.memory import StageMemory
from geoindex.pipeline.plan import BuildPlan, make_plan
from geoindex.pipeline.self_check import self_check
from geoindex.pipeline.shard_cells import ShardCells
from geoindex.pipeline.workdir import WorkLock, fresh_staging, prepare_work_dir, publish, work_dir_for
from geoindex.cells.region import describe_region, region_from_dict
from geoindex.encoders.location import load_location_encoder
from geoindex.errors import InvalidArgumentError
from geoindex.store import manifest
from geoindex.store.cell_table import load_cell_table

log = logging.getLogger(__name__)

__all__ = ["BuildConfig", "BuildResult", "build", "summary_line", "work_dir_for"]


def build(config: BuildConfig) -> BuildResult:
    """Build (or resume) the index that ``config`` describes, and publish it at ``config.out``.

    Every argument is checked first (:func:`geoindex.pipeline.plan.make_plan`): a refusal comes before
    any enumeration or encoding and leaves nothing on disk. A build that stops (Ctrl-C, a kill, a
    full disk) keeps its finished shards in the hidden work dir ``.<out>.partial/``; the same build
    (by its normalised plan: ``resolution=3`` and the CLI's ``"03"`` are the same) resumes from them
    and gives the same index, byte for byte.

    Args:
        config: What to build (gallery, index, store, device, output).

    Returns:
        The published directory, its manifest and the self-check (recall@10 against exact
        search, self-hit@1 over 256 seeded gallery cells).

    Raises:
        InvalidArgumentError: An argument is out of range, malformed or contradicts another
            (listed in docs/build-plan.md), or the gallery is empty.
        GalleryFileError: The CSV gallery has a bad row.
        IndexDirError: ``out`` is not ours to write, or another build is writing it.
        WeightsNotFoundError: The GeoCLIP weights are not on disk.
        WriteError: The disk filled up, or a file cannot be written.
    """
    t_total = time.perf_counter()
    plan = make_plan(config)
    state = torch.load(plan.weights.location_encoder, map_location="cpu", weights_only=True)
    model = load_location_encoder(plan.device, plan.driver_precision, state=state)
    lock = WorkLock(plan.work)
    try:
        return _build_locked(plan, model, state, lock, t_total)
    except OSError as e:  # a full disk met outside the writes that name their file
        error = write_error(plan.work, e, write.DISK_FULL_FIX)
        if error is None:
            raise
        raise error from e
    finally:
        lock.release()


def _build_locked(plan: BuildPlan, model, state: dict, lock: WorkLock, t_total: float) -> BuildResult:
    memory = StageMemory()
    try:
        return _build_measured(plan, model, state, lock, t_total, Timer(memory))
    finally:
        memory.stop()


def _build_measured(plan: BuildPlan, model, state: dict, lock: WorkLock, t_total: float, timer: Timer) -> BuildResult:
    prepare_work_dir(plan.work, plan.fingerprint())
    timer.begin("encode")
    shards = encode_shards(plan, model, None if plan.ray_actors is None else state, timer)
    cells = ShardCells(shards)
    if len(cells) == 0:
        where = f" in {describe_region(plan.region)}" if plan.region else ""
        raise InvalidArgumentError(
            f"the gallery is empty (resolution {plan.resolution}, cells={plan.cells}{where}): "
            + ("widen the region, or use --cells all for sea cells too" if where else "use --cells all"))

    t = timer.begin("train")
    choice, builder = index_stage.choose_index(plan, cells)
    trained = index_stage.train(plan, choice, builder, shards, cells.counts)
    if trained is not None:
        log.info("resuming: the trained index and %d filled parts in %s", parts.filled_parts(plan.work), plan.work)
    timer.add("train", t)

    staging = fresh_staging(plan.work)
    try:
        t = timer.begin("add")
        index = index_stage.add_all(plan, choice, builder, trained, shards, cells.counts, staging, timer)
        timer.add("add", t)
        hot = write.write_hot(shards, cells, staging, timer)
        facts = write.write_vectors(index, staging, timer) | {"hot": hot}
        built_on_gpu = builder.on_gpu
        if not choice.on_disk:  # the self-check reads the codes mapped from the file just written, not
            del index           # from anonymous memory (169 MB at res 6, 1.1 GB at res 7): the kernel can drop them
            index = write.reopen_mapped(staging, choice.search)
        del builder, trained
        t = timer.begin("self_check")
        check = self_check(index, shards, cells, plan.seed, choice.search.rerank_depth, model,
                           load_cell_table(staging / manifest.CELLS))
        timer.add("self_check", t)
        del index  # the codes leave memory before DuckDB runs
        facts = write.write_metadata(choice, shards, cells, staging, timer, facts)
        timer.seconds["total"] = time.perf_counter() - t_total
        timer.begin("manifest")
        man = write.make_manifest(plan, choice, facts, staging, check, timer.seconds, built_on_gpu,
                                  timer.memory.record())
        manifest.write_manifest(staging, man)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # no half-written index left (rebuilt on resume)
        raise
    publish(plan.work, staging, plan.out, lock)
    return BuildResult(plan.out, man, check)


def summary_line(result: BuildResult) -> str:
    """One line on the finished build: cells, index, sizes, time, peak RSS, self-check."""
    m = result.manifest
    g, idx, t = m["gallery"], m["index"], m["timings_s"]
    what = f"res {g['resolution']} {g['cells']}" if g["kind"] == "h3" else f"CSV {g['path']}"
    if g.get("region"):
        what += f" in {describe_region(region_from_dict(g['region']))}"
    size_mb = sum(f["bytes"] for f in m["files"].values()) / 1e6
    mem = m.get("memory") or {}
    store = f" + {m['store']['kind']} store {mem['disk_bytes'] / 1e6:.1f} MB on disk" if m.get("store") else ""
    budget_note = f" (budget {mem['max_memory'] / 1e6:.1f} MB)" if "max_memory" in mem else ""
    return (
        f"built {result.path}: {g['count']:,} cells ({what}), {idx['factory']} [{idx['search'] or 'exact'}], "
        f"{mem.get('resident_bytes', 0) / 1e6:.1f} MB resident ({mem.get('resident_bytes_per_vector', 0)} B/vector)"
        f"{budget_note}{store}, {size_mb:.1f} MB in all, {t['total']:.1f} s, peak RSS {m['peak_rss_mib']:.0f} MiB; self-check "
        f"recall@10 {m['self_check']['recall_at_10']:.3f}, self-hit@1 {m['self_check']['self_hit_at_1']:.3f}"
    )
