"""The streaming, resumable index builder behind ``build_index``.

Stages: gallery shards -> location encoder -> shard files (vectors + metadata, spilled to disk)
-> FAISS train on a sample -> add shard by shard -> DuckDB ``cells`` -> manifest -> rename.

Everything is written under a hidden sibling ``.<name>.partial/`` of the output directory; the
finished directory is renamed into place only when complete, so no reader ever sees half an
index. A build that dies keeps its finished shards there, and the same command resumes from them
and produces the same index (same shards, same seeded sample, same add order).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import h3
import numpy as np
import torch
from tqdm.auto import tqdm

from geoindex.build import distributed
from geoindex.build.self_check import self_check
from geoindex.build.workdir import check_output, fresh_staging, lock_work_dir, prepare_work_dir, publish, work_dir_for
from geoindex.cells import csv_gallery, gallery
from geoindex.cells.geocode import reverse_geocode
from geoindex.cells.h3ids import cell_to_parent
from geoindex.cells.region import (
    RegionFilter,
    cells_inside,
    check_build_region,
    describe_region,
    region_from_dict,
    region_to_dict,
    shard_roots_in,
)
from geoindex.encoders.location import EMBED_DIM, load_location_encoder, location_state_dict, pick_device
from geoindex.encoders.weights import geoclip_files, sha256_file
from geoindex.errors import IndexDirError, InvalidArgumentError
from geoindex.index import budget
from geoindex.index import factory as index_factory
from geoindex.index.builder import IndexBuilder
from geoindex.index.h3lists import h3_centroids, list_numbers, list_parents
from geoindex.index.search import SearchSettings, apply_search_settings
from geoindex.store import exact_store, manifest
from geoindex.store.cell_table import write_hot_columns
from geoindex.store.cells_db import write_cells_table
from geoindex.store.shards import ShardFile, iter_vectors, sample_vectors, shard_files

log = logging.getLogger(__name__)

TRAIN_MIN = 65_536
TRAIN_PER_LIST = 64
TRAIN_MAX = 300_000


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides an index. ``resolution`` for H3 galleries, or ``gallery_csv``.
    ``search``: the index's default search settings (a search string is parsed here, once);
    None: the factory's default."""

    out: Path
    resolution: int | None = None
    cells: str = "land"
    gallery_csv: Path | None = None
    factory: str = "auto"
    search: SearchSettings | None = None
    batch_size: int = 8192
    device: str = "auto"
    precision: str = "fp32"
    overwrite: bool = False
    seed: int = 1234
    progress: bool = True
    store: str = "auto"
    max_memory: int | None = None
    region: RegionFilter | None = None  # a regional build: only the cells inside (geoindex.cells.region)
    lists_on_disk: bool | None = None  # IVF lists in DIR/lists.ivfdata; None: when they would not fit in memory
    ray: str | None = None  # build on Ray: "auto" (this process's cluster, $RAY_ADDRESS or a local one) or an address
    weights: Path | None = None  # a GeoCLIP weights folder (geoindex-train fit --out); None: the released weights

    def __post_init__(self) -> None:
        if isinstance(self.search, str):
            object.__setattr__(self, "search", SearchSettings.parse(self.search))
        if isinstance(self.max_memory, str):
            object.__setattr__(self, "max_memory", budget.parse_size(self.max_memory))
        if self.region is not None and not self.region:
            object.__setattr__(self, "region", None)  # an empty filter is the whole gallery


@dataclass
class BuildResult:
    path: Path
    manifest: dict[str, Any]
    check: dict[str, Any] = field(default_factory=dict)


def _fingerprint(config: BuildConfig, resolution: int | None, weights_sha: str, device_type: str,
                 csv_sha: str | None) -> dict:
    """What the shard files depend on. A resume reuses shards only when this matches (whether they
    were encoded on Ray or in one process does not matter: the shards are the same)."""
    return {
        "gallery": {"kind": "csv", "sha256": csv_sha} if csv_sha else
                   {"kind": "h3", "resolution": config.resolution, "cells": config.cells,
                    **({"region": region_to_dict(config.region)} if config.region else {})},
        "weights_sha256": weights_sha,
        "precision": config.precision,
        "device_type": device_type,
        "batch_size": config.batch_size,
        "shard_depth": gallery.SHARD_DEPTH,
        "spill_dtype": spill_dtype(config, resolution).name,
    }


def spill_dtype(config: BuildConfig, resolution: int | None) -> np.dtype:
    """The dtype shard files keep vectors in: float16 when the index will keep an fp16 exact store
    (asked for, or the global default from res 5 up), since that store is all that outlives the
    build; else float32, the encoder's output bit for bit."""
    if config.store == "fp16":
        return np.dtype(np.float16)
    default = (config.store == "auto" and config.factory == "auto" and config.max_memory is None
               and not config.region and resolution is not None)
    if default and index_factory.auto_choice(resolution)[1].rerank_depth:
        return np.dtype(np.float16)
    return np.dtype(np.float32)


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, start: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def build(config: BuildConfig) -> BuildResult:
    """Build (or resume) the index described by ``config``; return the finished directory."""
    t_total = time.perf_counter()
    timer = _Timer()
    csv_latlng, csv_sha = None, None
    if config.gallery_csv is not None:
        csv_latlng = csv_gallery.read_gallery_csv(config.gallery_csv)
        csv_sha = sha256_file(Path(config.gallery_csv))
        resolution = None
    else:
        resolution = gallery.validate_resolution(config.resolution)
        gallery.validate_cells(config.cells)
        if config.region:
            check_build_region(config.region, resolution)
    if config.region and config.gallery_csv is not None:
        raise InvalidArgumentError("--country/--bbox/--cells select H3 cells; a CSV gallery holds its own rows: "
                                   "keep only the rows you want in the CSV")
    if config.region and config.factory == "auto" and config.search is not None:
        raise InvalidArgumentError("a regional build picks its index by how many cells the region holds: "
                                   "give --index too when you give --search (e.g. --index IVF,SQ8)")
    if not (config.region and config.factory == "auto"):  # else known once the region's cells are
        index_factory.check_factory(config.factory, resolution, config.search,
                                    None if csv_latlng is None else len(csv_latlng))
    exact_store.check_kind(config.store)
    if config.max_memory is not None:
        budget.check_request(config.max_memory, config.factory, config.search, resolution)
    if config.batch_size <= 0:
        raise InvalidArgumentError(f"--batch-size {config.batch_size} must be positive: try 8192")
    check_output(config.out, config.overwrite)

    files = geoclip_files(config.weights)
    weights_sha = sha256_file(files.location_encoder)
    ray_plan = None
    if config.ray is None:
        device = pick_device(config.device)
        model = load_location_encoder(device, config.precision, config.weights)
    else:  # the actors encode on the cluster's devices; the driver's encoder only serves the self-check
        ray_plan = distributed.actor_plan(distributed.connect(config.ray), config.device)
        device = pick_device("cpu" if config.device == "cpu" else "auto")
        model = load_location_encoder(device, config.precision if device.type == "cuda" else "fp32", config.weights)
    out = config.out.resolve()
    work = work_dir_for(out)
    lock = lock_work_dir(work)
    try:
        return _build_locked(config, resolution, csv_latlng, csv_sha, files, weights_sha, device,
                             model, out, work, timer, t_total, ray_plan)
    finally:
        lock.close()
        Path(lock.name).unlink(missing_ok=True)


def _build_locked(config, resolution, csv_latlng, csv_sha, files, weights_sha, device, model,
                  out: Path, work: Path, timer: _Timer, t_total: float, ray_plan) -> BuildResult:
    device_type = ray_plan[1] if ray_plan else device.type
    prepare_work_dir(work, _fingerprint(config, resolution, weights_sha, device_type, csv_sha))

    shards = _encode_shards(config, resolution, csv_latlng, model, work, timer, ray_plan)
    counts = [s.count() for s in shards]
    n = sum(counts)
    if n == 0:
        where = f" in {describe_region(config.region)}" if config.region else ""
        raise InvalidArgumentError(
            f"the gallery is empty (resolution {resolution}, cells={config.cells}{where}): "
            + ("widen the region, or use --cells all for sea cells too" if where else "use --cells all")
        )

    t = time.perf_counter()
    cells = np.concatenate([s.read("cell")["cell"] for s in shards])
    factory, search, store_kind, choice = config.factory, config.search, config.store, None
    if config.max_memory is not None:
        choice = budget.choose(config.max_memory, resolution, n,
                               lambda r: np.unique(cell_to_parent(cells, r), return_counts=True)[1])
        factory, search = choice.factory, choice.search
        if store_kind == "auto":
            store_kind = choice.store or "none"
    if factory == "auto" and config.region:
        factory, search = index_factory.regional_choice(resolution, n)
    plan, parents = _plan(factory, n, resolution, cells)
    search = search if search is not None else index_factory.default_search(factory, plan, resolution, n)
    store_kind = exact_store.resolve_kind(store_kind, search)
    builder = IndexBuilder(plan, use_gpu=None)
    apply_search_settings(builder.cpu_index, search)
    on_disk = _lists_on_disk(config.lists_on_disk, plan, builder, n)
    # parts need lists to merge: an IVF index itself (not under a refine or an IdMap)
    in_parts = isinstance(builder.cpu_index, faiss.IndexIVF) and (ray_plan is not None or on_disk)
    train_size = _train_size(plan, builder.cpu_index, n)
    trained = _saved_trained(work, plan, search, config.seed, train_size) if in_parts else None
    if trained is None:  # else a resumed build's saved trained index, whose parts may be on disk
        if parents is not None:
            builder.set_h3_centroids(h3_centroids(iter_vectors(shards), parents, plan.h3_list_res))
        if not builder.index.is_trained:
            sample = sample_vectors(shards, counts, train_size, config.seed)
            builder.train(sample)
            del sample
    timer.add("train", t)

    t = time.perf_counter()
    staging = fresh_staging(work)
    if in_parts:
        if trained is None:
            trained = _save_trained(work, builder.trained_empty(), plan, search, config.seed, train_size)
        part_files = _fill_parts(config, work, shards, counts, trained, parents, plan, ray_plan)
        t_merge = time.perf_counter()
        index = builder.finish_merged(distributed.merge_parts(
            trained, part_files, staging / manifest.LISTS if on_disk else None))
        timer.add("merge", t_merge)
    else:
        with _bar(config, n, "add to index", "vec") as bar:
            for ids, xb in iter_vectors(shards):
                lists = None
                if parents is not None:
                    lists = list_numbers(ids, parents, plan.h3_list_res)
                builder.add(xb, ids, lists)
                bar.update(len(ids))
        index = builder.finish()
    apply_search_settings(index, search)
    timer.add("add", t)

    t = time.perf_counter()
    check = self_check(index, shards, counts, config.seed, search.rerank_depth, model)
    timer.add("self_check", t)

    t = time.perf_counter()
    faiss.write_index(index, str(staging / manifest.VECTORS))
    ntotal, nlist, built_on_gpu = int(index.ntotal), _nlist(index), builder.on_gpu
    del index, builder  # the codes (2 GB at res 6) leave memory before DuckDB runs
    timer.add("write_index", t)
    t = time.perf_counter()
    rows = write_cells_table(staging / manifest.CELLS, (s.read(*_META_COLUMNS) for s in shards))
    hot = write_hot_columns(staging / manifest.CELLS, staging)
    timer.add("metadata_db", t)
    store_bytes = 0
    if store_kind is not None:
        t = time.perf_counter()
        store_bytes = exact_store.write_store(staging, store_kind, np.sort(cells), lambda: iter_vectors(shards))
        timer.add("exact_store", t)
    if rows != n or ntotal != n:
        raise IndexDirError(f"internal count mismatch: {n} vectors, {ntotal} in FAISS, {rows} rows")

    timer.seconds["total"] = time.perf_counter() - t_total
    man = {
        "format": manifest.FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gallery": _gallery_entry(config, resolution, csv_sha, n),
        "encoder": {
            "name": "geoclip-location-encoder",
            "weights_source": files.source,
            "weights_sha256": weights_sha,
            "logit_scale": float(torch.load(files.logit_scale, weights_only=True)),
            "precision": config.precision,
            "device": f"{ray_plan[0]} Ray {ray_plan[1]} actors" if ray_plan else str(device),
            "dim": EMBED_DIM,
            "normalized": True,
            "metric": "inner_product",
        },
        "index": {
            "factory_requested": config.factory if choice is None else f"--max-memory {config.max_memory}",
            "factory": plan.factory,
            "faiss_factory": plan.faiss_factory,
            "search": str(search),
            "ntotal": ntotal,
            "nlist": nlist,
            "h3_list_resolution": plan.h3_list_res,
            "train_size": train_size,
            "built_on": "gpu" if built_on_gpu else "cpu",
            "built_with": "ray" if ray_plan else "one process",
            "lists": "disk" if on_disk else "memory",
            "seed": config.seed,
        },
        "store": None if store_kind is None else {
            "kind": store_kind, "file": exact_store.STORE, "order": "cell",
            "bytes_per_vector": exact_store.bytes_per_vector(store_kind)},
        "memory": _memory_entry(staging, ntotal, store_bytes, choice, config.max_memory),
        "self_check": check,
        "timings_s": {k: round(v, 3) for k, v in timer.seconds.items()},
        "peak_rss_mib": round(_max_rss_mib(), 1),
        "versions": manifest.versions(),
        "files": manifest.file_entries(staging, manifest.REQUIRED_FILES + exact_store.store_files(store_kind)
                                       + ((manifest.LISTS,) if on_disk else ()) + hot),
    }
    manifest.write_manifest(staging, man)
    publish(staging, out)
    shutil.rmtree(work, ignore_errors=True)
    return BuildResult(out, man, check)


def _memory_entry(staging: Path, ntotal: int, store_bytes: int, choice, max_memory: int | None) -> dict:
    """What the index costs: ``resident_bytes`` (the FAISS index, which a Geolocator holds in RAM),
    ``disk_bytes`` (the exact store, memory-mapped and read per candidate) and, for a
    ``--max-memory`` build, the budget and the measured configuration chosen for it."""
    resident = (staging / manifest.VECTORS).stat().st_size
    entry = {"resident_bytes": resident, "resident_bytes_per_vector": round(resident / max(ntotal, 1), 1),
             "disk_bytes": store_bytes, "disk_bytes_per_vector": round(store_bytes / max(ntotal, 1), 1)}
    if (staging / manifest.LISTS).is_file():  # mapped, read a list at a time: on disk, not resident
        entry["lists_disk_bytes"] = (staging / manifest.LISTS).stat().st_size
    if choice is not None:
        if resident > max_memory:
            raise IndexDirError(f"internal: the index takes {resident:,} B resident, over the budget "
                                f"{max_memory:,} B that {choice.factory} was predicted to fit")
        entry.update(max_memory=max_memory, chosen=choice.to_dict())
    return entry


LISTS_IN_MEMORY_SHARE = 0.5  # auto: lists go to disk when they would take over half of this machine's memory


def _lists_on_disk(asked: bool | None, plan, builder: IndexBuilder, n: int) -> bool:
    """Whether the inverted lists go to ``lists.ivfdata``: as asked, else (None) when the lists'
    codes and ids would take more than half of the machine's memory."""
    ivf = builder.cpu_index
    mappable = isinstance(ivf, faiss.IndexIVF) and not builder.fast_scan and "FastScan" not in type(ivf).__name__
    if asked and not mappable:
        raise InvalidArgumentError(
            f"--lists-on-disk needs an IVF index whose lists FAISS can map from disk; {plan.factory} has "
            "none (Flat, HNSW) or packs them for SIMD (fast-scan PQ..x4fs): use e.g. --index IVFH3,PQ32")
    if asked is not None or not mappable:
        return bool(asked)
    lists_bytes = n * (ivf.code_size + 8)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return lists_bytes > LISTS_IN_MEMORY_SHARE * memory


def _saved_trained(work: Path, plan, search, seed: int, train_size: int) -> faiss.Index | None:
    """The trained empty index a killed build saved, when it was trained for the same plan."""
    stamp, path = work / "trained.json", work / "trained.faiss"
    try:
        if json.loads(stamp.read_text()) == _trained_key(plan, search, seed, train_size):
            log.info("resuming: the trained index and %d filled parts in %s", len(list((work / "parts").glob("*.faiss"))), work)
            return faiss.read_index(str(path))
    except (OSError, ValueError, RuntimeError):
        pass
    shutil.rmtree(work / "parts", ignore_errors=True)  # parts of another training are worthless
    return None


def _save_trained(work: Path, index: faiss.Index, plan, search, seed: int, train_size: int) -> faiss.Index:
    tmp = work / "trained.faiss.tmp"
    faiss.write_index(index, str(tmp))
    os.replace(tmp, work / "trained.faiss")
    (work / "trained.json").write_text(json.dumps(_trained_key(plan, search, seed, train_size)))
    return index


def _trained_key(plan, search, seed: int, train_size: int) -> dict:
    return {"faiss_factory": plan.faiss_factory, "factory": plan.factory, "search": str(search),
            "seed": seed, "train_size": train_size, "parts": "inverted lists"}


def _fill_parts(config: BuildConfig, work: Path, shards: list[ShardFile], counts: list[int],
                trained: faiss.Index, parents, plan, ray_plan) -> list[Path]:
    """Add every part's vectors to its own copy of the trained empty index (Ray tasks, or here),
    each kept as ``parts/NNNNN.faiss`` until the merge: a resumed build redoes only missing parts."""
    folder = work / "parts"
    folder.mkdir(exist_ok=True)
    runs = distributed.part_runs(counts)
    files = [folder / f"{i:05d}.faiss" for i in range(len(runs))]

    def loader(run: list[int]):
        def load():
            ids, xb = zip(*iter_vectors([shards[i] for i in run], as_spilled=True))
            ids, xb = np.concatenate(ids), np.concatenate(xb)
            return ids, xb, None if parents is None else list_numbers(ids, parents, plan.h3_list_res)
        return load

    todo = [(i, loader(run)) for i, run in enumerate(runs) if not files[i].is_file()]
    sizes = [sum(counts[i] for i in run) for run in runs]
    with _bar(config, sum(sizes), "add to index", "vec") as bar:
        bar.update(sum(sizes) - sum(sizes[i] for i, _ in todo))
        for i, blob in distributed.fill_parts(trained, todo, None if ray_plan is None else ray_plan[0]):
            tmp = files[i].with_suffix(".tmp")
            blob.tofile(tmp)
            os.replace(tmp, files[i])
            bar.update(sizes[i])
    return files


def _nlist(index: faiss.Index) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    return int(ivf.nlist) if ivf is not None else 0


_META_COLUMNS = ("cell", "lat", "lng", "res", "area_km2", "is_land", "country", "admin1", "place", "place_km")


def _bar(config: BuildConfig, total: int, desc: str, unit: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not config.progress,
                dynamic_ncols=True, mininterval=1.0)


def _encode_shards(config, resolution, csv_latlng, model, work: Path, timer: _Timer, ray_plan) -> list[ShardFile]:
    """Stage 1: enumerate, encode and describe every shard not yet on disk (in this process, or on
    the Ray actors of ``ray_plan``)."""
    if csv_latlng is not None:
        parts = dict(csv_gallery.csv_shards(csv_latlng))
        keys = [f"rows{k:06d}" for k in parts]
        shards = shard_files(work / "shards", keys)
        jobs = [(s, partial(_given, parts[k]), len(parts[k])) for s, k in zip(shards, parts)]
    else:
        roots = gallery.h3_shard_roots(resolution)
        if config.region:
            roots = shard_roots_in(config.region, roots, resolution)
        shards = shard_files(work / "shards", [h3.int_to_str(r) for r in roots])
        jobs = [(s, partial(_h3_batch, r, resolution, config),
                 h3.cell_to_children_size(h3.int_to_str(r), resolution)) for s, r in zip(shards, roots)]
    total = sum(scanned for _, _, scanned in jobs)
    scanned_of = {s.key: scanned for s, _, scanned in jobs}
    dtype = spill_dtype(config, resolution)
    todo = [(s, make_batch) for s, make_batch, _ in jobs if not s.exists()]
    with _bar(config, total, "encode gallery", "cell") as bar:
        kept = sum(s.count() for s, _, _ in jobs if s.exists())
        bar.update(total - sum(scanned_of[s.key] for s, _ in todo))
        if ray_plan is None:
            done = ((s, *distributed.encode_shard(model, make_batch, config.batch_size, resolution, dtype))
                    for s, make_batch in todo)
        else:
            actors, device = ray_plan
            done = distributed.encode_on_ray(todo, actors, device, config.precision, config.batch_size,
                                             resolution, dtype, location_state_dict(config.weights))
        for shard, vectors, meta, seconds in done:
            t = time.perf_counter()
            shard.write(vectors, meta)
            timer.add("write_shards", t)
            for step, sec in seconds.items():
                timer.seconds[step] = timer.seconds.get(step, 0.0) + sec
            kept += len(meta["cell"])
            bar.update(scanned_of[shard.key])
            bar.set_postfix(kept=f"{kept:,}", refresh=False)
    return shards


def _given(batch: gallery.CellBatch) -> gallery.CellBatch:
    return batch


def _h3_batch(root: int, resolution: int, config: BuildConfig) -> gallery.CellBatch:
    """One shard's gallery cells, only those inside the build's region when it has one."""
    batch = gallery.h3_shard(root, resolution, config.cells)
    if not config.region or not len(batch):
        return batch
    country = reverse_geocode(batch.lat, batch.lng, batch.is_land).country if config.region.countries else None
    keep = cells_inside(config.region, batch.cell, batch.lat, batch.lng, country)
    return gallery.CellBatch(batch.cell[keep], batch.lat[keep], batch.lng[keep], batch.is_land[keep])


def _plan(factory: str, n: int, resolution: int | None, cells: np.ndarray):
    """Resolve the factory; for IVFH3 also return the sorted parent ids (one list each)."""
    plan = index_factory.resolve(factory, n, resolution, n_parents=0)
    if plan.h3_list_res is None:
        return plan, None
    parents = list_parents(cells, plan.h3_list_res)
    return index_factory.resolve(factory, n, resolution, n_parents=len(parents)), parents


def _train_size(plan, index: faiss.Index, n: int) -> int:
    if index.is_trained:
        return 0
    ivf = faiss.try_extract_index_ivf(index)
    wanted = TRAIN_MIN
    if ivf is not None and plan.h3_list_res is None:
        wanted = max(wanted, TRAIN_PER_LIST * ivf.nlist)
    return int(min(n, wanted, TRAIN_MAX))


def _gallery_entry(config: BuildConfig, resolution: int | None, csv_sha: str | None, n: int) -> dict:
    if csv_sha is not None:
        return {"kind": "csv", "path": str(config.gallery_csv), "sha256": csv_sha, "count": n}
    entry = {"kind": "h3", "resolution": resolution, "cells": config.cells, "count": n}
    if config.region:
        entry["region"] = region_to_dict(config.region)
    return entry


def summary_line(result: BuildResult) -> str:
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

