"""The cell build behind ``geoindex build``: H3 cells or a CSV of coordinates as a gallery source
(:class:`CellSource`) of the one gallery pipeline (:mod:`.skeleton`).

Stages: plan (every argument checked and decided, :mod:`.plan`) -> gallery shards -> location
encoder -> shard files (vectors + metadata, spilled to disk, :mod:`.encode`) -> the index chosen,
trained on a sample and filled shard by shard (:mod:`.index_stage`, :mod:`.parts`) -> hot columns,
FAISS file, self-check -> DuckDB ``cells``, store, manifest (:mod:`.write`) -> publish.

Everything is written under a hidden sibling ``.<name>.partial/`` of the output directory
(:mod:`.workdir`); it becomes the index directory in one rename only when complete, so no reader
ever sees half an index. A build that dies keeps its finished shards there, and the same build
resumes from them and produces the same index (same shards, same seeded sample, same add order).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import faiss
import torch

from geoindex.pipeline import index_stage, parts, write
from geoindex.pipeline.config import BuildConfig, BuildResult
from geoindex.pipeline.encode import Timer, encode_shards
from geoindex.pipeline.plan import BuildPlan, make_plan
from geoindex.pipeline.self_check import cell_check
from geoindex.pipeline.shard_cells import ShardCells
from geoindex.pipeline.skeleton import run
from geoindex.pipeline.workdir import work_dir_for
from geoindex.cells.region import describe_region, region_from_dict
from geoindex.encoders.location import load_location_encoder
from geoindex.errors import InvalidArgumentError
from geoindex.index.search import SearchSettings
from geoindex.store import manifest
from geoindex.store.cell_table import load_cell_table

log = logging.getLogger(__name__)

__all__ = ["BuildConfig", "BuildResult", "CellSource", "build", "summary_line", "work_dir_for"]


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
    started = time.perf_counter()
    plan = make_plan(config)
    state = torch.load(plan.weights.location_encoder, map_location="cpu", weights_only=True)
    model = load_location_encoder(plan.device, plan.driver_precision, state=state)
    man, check = run(CellSource(plan, model, state), started)
    return BuildResult(plan.out, man, check)


class CellSource:
    """H3 cells or a CSV of coordinates as a gallery source of :func:`geoindex.pipeline.skeleton.run`:
    shard files of location-encoder vectors (:mod:`.encode`), the index of :mod:`.index_stage`, the
    DuckDB ``cells`` table, hot columns and exact store (:mod:`.write`). ``plan``: every refusal made;
    ``model``: the driver's location encoder; ``state``: its weights (for Ray's actors)."""

    work_subdirs = ("shards",)
    disk_full_fix = write.DISK_FULL_FIX

    def __init__(self, plan: BuildPlan, model, state: dict):
        self.plan, self.model, self.state = plan, model, state
        self.out, self.work, self.seed = plan.out, plan.work, plan.seed

    def fingerprint(self) -> dict:
        return self.plan.fingerprint()

    def encode(self, timer: Timer) -> None:
        plan = self.plan
        done = len(list((plan.work / "shards").glob("*.npz")))
        if done:
            log.info("resuming: %d finished shards in %s", done, plan.work)
        timer.begin("encode")
        self.shards = encode_shards(plan, self.model, None if plan.ray_actors is None else self.state, timer)
        self.cells = ShardCells(self.shards)
        if len(self.cells) == 0:
            where = f" in {describe_region(plan.region)}" if plan.region else ""
            raise InvalidArgumentError(
                f"the gallery is empty (resolution {plan.resolution}, cells={plan.cells}{where}): "
                + ("widen the region, or use --cells all for sea cells too" if where else "use --cells all"))

    def train(self, timer: Timer) -> None:
        t = timer.begin("train")
        self.choice, self.builder = index_stage.choose_index(self.plan, self.cells)
        self.trained = index_stage.train(self.plan, self.choice, self.builder, self.shards, self.cells.counts)
        if self.trained is not None:
            log.info("resuming: the trained index and %d filled parts in %s", parts.filled_parts(self.work), self.work)
        timer.add("train", t)

    def add(self, staging: Path, timer: Timer) -> tuple[faiss.Index, SearchSettings, bool]:
        t = timer.begin("add")
        index = index_stage.add_all(self.plan, self.choice, self.builder, self.trained, self.shards,
                                    self.cells.counts, staging, timer)
        timer.add("add", t)
        self.hot = write.write_hot(self.shards, self.cells, staging, timer)
        self.built_on_gpu = self.builder.on_gpu
        self.builder = self.trained = None  # the index is the builder's: nothing else held
        return index, self.choice.search, self.choice.on_disk

    def check(self, index: faiss.Index, staging: Path):
        return cell_check(index, self.shards, self.cells, self.choice.search.rerank_depth, self.model,
                          load_cell_table(staging / manifest.CELLS))

    def write_metadata(self, staging: Path, written: dict, timer: Timer) -> None:
        self.facts = write.write_metadata(self.choice, self.shards, self.cells, staging, timer,
                                          {**written, "hot": self.hot})

    def manifest(self, staging: Path, written: dict, check: dict, timings: dict, memory: dict) -> dict:
        return write.make_manifest(self.plan, self.choice, self.facts, staging, check, timings, self.built_on_gpu,
                                   memory)


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
