"""Stage 4 of the build: the index directory's files (FAISS index, DuckDB cells, hot columns,
exact store) written into the work dir's ``staging/``, then its manifest.

Staging is published whole (:func:`geoindex.pipeline.workdir.publish`), so its files need no
rename each; a full disk while writing one becomes one line naming that file
(:func:`geoindex.atomic.writing`) and the caller removes staging.
"""

from __future__ import annotations

import resource
from datetime import datetime, timezone
from pathlib import Path

import faiss

from geoindex.atomic import writing
from geoindex.pipeline.index_stage import IndexChoice
from geoindex.pipeline.plan import BuildPlan
from geoindex.pipeline.shard_cells import ShardCells
from geoindex.cells.countries import labels_entry
from geoindex.cells.region import region_to_dict
from geoindex.constants import EMBED_DIM
from geoindex.errors import IndexDirError
from geoindex.store import exact_store, manifest
from geoindex.store.cells_db import write_cells_table
from geoindex.store.hot_writer import write_hot_columns_streaming
from geoindex.store.shards import ShardFile, iter_vectors

HOT_COLUMNS = ("cell", "lat", "lng", "country", "admin1", "place")
META_COLUMNS = ("cell", "lat", "lng", "res", "area_km2", "is_land", "country", "admin1", "place", "place_km")
DISK_FULL_FIX = ("free space on that disk and run the same command again: the finished shards are kept "
                 "and resumed from")


def write_vectors(index: faiss.Index, staging: Path, timer, fix: str = DISK_FULL_FIX) -> dict:
    """Write the FAISS index into ``staging`` (FAISS's notices on stderr); return what the manifest
    records of it (``ntotal``, ``nlist``). The caller drops the index after: its codes leave memory
    before DuckDB runs. ``fix``: what a full disk's message advises."""
    from geoindex.index.io import stdout_to_stderr

    t = timer.begin("write_index")
    with writing(staging / manifest.VECTORS, fix), stdout_to_stderr():
        faiss.write_index(index, str(staging / manifest.VECTORS))
    ivf = faiss.try_extract_index_ivf(index)
    timer.add("write_index", t)
    return {"ntotal": int(index.ntotal), "nlist": int(ivf.nlist) if ivf is not None else 0}


def reopen_mapped(staging: Path, search) -> faiss.Index:
    """The index just written into ``staging``, its inverted lists memory-mapped from the file
    (``IO_FLAG_MMAP``) and ``search`` (SearchSettings) applied as a reader applies them: the same
    answers, from file-backed pages instead of anonymous memory."""
    from geoindex.index.io import read_index
    from geoindex.index.search import apply_search_settings

    index = read_index(staging / manifest.VECTORS, faiss.IO_FLAG_MMAP)
    apply_search_settings(index, search)
    return index


def write_hot(shards: list[ShardFile], cells: ShardCells, staging: Path, timer) -> tuple[str, ...]:
    """Write the hot columns into ``staging/hot`` from the shards (:mod:`geoindex.store.hot_writer`);
    return their names. Written before the self-check, which finds candidates' centres in them."""
    t = timer.begin("hot_columns")
    with writing(staging / "hot", DISK_FULL_FIX):
        names = write_hot_columns_streaming(staging, lambda: (s.read(*HOT_COLUMNS) for s in shards), cells.rows)
    timer.add("hot_columns", t)
    return names


def write_metadata(choice: IndexChoice, shards: list[ShardFile], cells: ShardCells, staging: Path, timer,
                   facts: dict) -> dict:
    """Write the DuckDB cells and the exact store into ``staging``; return ``facts`` with
    ``store_bytes``. Both stream from the shards: a shard's rows at a time."""
    facts = dict(facts)
    t = timer.begin("metadata_db")
    with writing(staging / manifest.CELLS, DISK_FULL_FIX):
        rows = write_cells_table(staging / manifest.CELLS, (s.read(*META_COLUMNS) for s in shards))
    timer.add("metadata_db", t)
    facts["store_bytes"] = 0
    if choice.store_kind is not None:
        t = timer.begin("exact_store")
        starts = [start for start, count in zip(cells.rows.offsets.tolist(), cells.counts) if count]

        def in_cell_order():  # iter_vectors skips empty shards, as ``starts`` does
            return ((slice(start, start + len(ids)), xb) for start, (ids, xb) in zip(starts, iter_vectors(shards)))

        with writing(staging / exact_store.STORE, DISK_FULL_FIX):
            facts["store_bytes"] = exact_store.write_store_rows(staging, choice.store_kind, len(cells), in_cell_order)
        timer.add("exact_store", t)
    n = len(cells)
    if rows != n or facts["ntotal"] != n:
        raise IndexDirError(f"internal count mismatch: {n} vectors, {facts['ntotal']} in FAISS, {rows} rows")
    return facts


def make_manifest(plan: BuildPlan, choice: IndexChoice, facts: dict, staging: Path, check: dict,
                  timings: dict, built_on_gpu: bool, memory: dict) -> dict:
    """The manifest of the index in ``staging`` (files hashed as they are there). ``memory``: the
    driver's peak anonymous and file-backed memory, per stage (:mod:`geoindex.pipeline.memory`)."""
    ntotal, store_kind = facts["ntotal"], choice.store_kind
    files = (manifest.REQUIRED_FILES + exact_store.store_files(store_kind)
             + ((manifest.LISTS,) if choice.on_disk else ()) + facts["hot"])
    return {
        "format": manifest.FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gallery": _gallery_entry(plan, ntotal),
        "labels": labels_entry(),
        "encoder": {
            "name": "geoclip-location-encoder", "weights_source": plan.weights.source,
            "weights_sha256": plan.weights_sha256, "logit_scale": plan.logit_scale,
            "precision": plan.precision, "device": plan.device_label, "dim": EMBED_DIM,
            "normalized": True, "metric": "inner_product",
        },
        "index": {
            "factory_requested": plan.factory if choice.budget_choice is None else f"--max-memory {plan.max_memory}",
            "factory": choice.index_plan.factory, "faiss_factory": choice.index_plan.faiss_factory,
            "search": str(choice.search), "ntotal": ntotal, "nlist": facts["nlist"],
            "h3_list_resolution": choice.index_plan.h3_list_res, "train_size": choice.train_size,
            "built_on": "gpu" if built_on_gpu else "cpu",
            "built_with": "ray" if plan.ray_actors is not None else "one process",
            "lists": "disk" if choice.on_disk else "memory", "seed": plan.seed,
        },
        "store": None if store_kind is None else {
            "kind": store_kind, "file": exact_store.STORE, "order": "cell",
            "bytes_per_vector": exact_store.bytes_per_vector(store_kind)},
        "memory": _memory_entry(staging, ntotal, facts["store_bytes"], choice, plan.max_memory),
        "self_check": check,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_memory": memory,
        "versions": manifest.versions(),
        "files": manifest.file_entries(staging, files),
    }


def _gallery_entry(plan: BuildPlan, n: int) -> dict:
    if plan.csv_sha256 is not None:
        return {"kind": "csv", "path": str(plan.gallery_csv), "sha256": plan.csv_sha256, "count": n}
    entry = {"kind": "h3", "resolution": plan.resolution, "cells": plan.cells, "count": n}
    if plan.region:
        entry["region"] = region_to_dict(plan.region)
    return entry


def _memory_entry(staging: Path, ntotal: int, store_bytes: int, choice: IndexChoice, max_memory: int | None) -> dict:
    """What the index costs: ``resident_bytes`` (the FAISS index, which a Geolocator holds in RAM),
    ``disk_bytes`` (the exact store, memory-mapped and read per candidate) and, for a
    ``--max-memory`` build, the budget and the measured configuration chosen for it."""
    resident = (staging / manifest.VECTORS).stat().st_size
    entry = {"resident_bytes": resident, "resident_bytes_per_vector": round(resident / max(ntotal, 1), 1),
             "disk_bytes": store_bytes, "disk_bytes_per_vector": round(store_bytes / max(ntotal, 1), 1)}
    if (staging / manifest.LISTS).is_file():  # mapped, read a list at a time: on disk, not resident
        entry["lists_disk_bytes"] = (staging / manifest.LISTS).stat().st_size
    if choice.budget_choice is not None:
        if resident > max_memory:
            raise IndexDirError(f"internal: the index takes {resident:,} B resident, over the budget "
                                f"{max_memory:,} B that {choice.budget_choice.factory} was predicted to fit")
        entry.update(max_memory=max_memory, chosen=choice.budget_choice.to_dict())
    return entry
