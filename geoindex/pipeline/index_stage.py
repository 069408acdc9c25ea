"""Stages 2-3 of the build: choose the index for the encoded gallery, train it, add every vector.

What needs the gallery's cells is decided here, once, into an :class:`IndexChoice`: the factory of
a regional or ``--max-memory`` build, the IVFH3 lists, the search settings and store, whether the
lists go to disk (when not asked), whether the add goes in parts (Ray, or lists on disk) and the
training sample's size. Everything else came from the plan.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from geoindex.pipeline import distributed, parts
from geoindex.pipeline.encode import progress_bar
from geoindex.pipeline.plan import MAPPABLE_EXAMPLE, BuildPlan
from geoindex.pipeline.shard_cells import ShardCells
from geoindex.index import budget
from geoindex.index import factory as index_factory
from geoindex.index import disk
from geoindex.index.builder import IndexBuilder
from geoindex.index.factory import IndexPlan
from geoindex.index.h3lists import h3_centroids, list_numbers
from geoindex.index.search import SearchSettings, apply_search_settings
from geoindex.index.training import train_size
from geoindex.store import exact_store, manifest
from geoindex.store.shards import ShardFile, iter_vectors, sample_vectors

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class IndexChoice:
    """The index for ``n`` encoded vectors: ``index_plan`` (the resolved factory), ``parents``
    (sorted H3 parent ids, one list each, for IVFH3; else None), the ``search`` settings stored,
    the ``store_kind`` written (None: no store), the ``--max-memory`` choice, whether the lists
    are ``on_disk``, whether the add goes ``in_parts`` and the training sample's size."""

    index_plan: IndexPlan
    parents: np.ndarray | None
    search: SearchSettings
    store_kind: str | None
    budget_choice: budget.Choice | None
    on_disk: bool
    in_parts: bool
    train_size: int


def choose_index(plan: BuildPlan, cells: ShardCells) -> tuple[IndexChoice, IndexBuilder]:
    """The index for the gallery's ``cells`` (read shard by shard), and its empty builder."""
    n = len(cells)
    factory, search, store_kind, choice = plan.factory, plan.search, plan.store, None
    if plan.max_memory is not None:
        choice = budget.choose(plan.max_memory, plan.resolution, n, lambda r: cells.parents(r)[1])
        factory, search = choice.factory, choice.search
        if store_kind == "auto":
            store_kind = choice.store or "none"
    if factory == "auto" and plan.region:
        factory, search = index_factory.regional_choice(plan.resolution, n)
    index_plan, parents = _resolve(factory, n, plan.resolution, cells)
    search = search if search is not None else index_factory.default_search(factory, index_plan, plan.resolution, n)
    builder = IndexBuilder(index_plan, use_gpu=None)
    apply_search_settings(builder.cpu_index, search)
    on_disk = _lists_on_disk(plan.lists_on_disk, index_plan, builder, n)
    # parts need lists to merge: an IVF index itself (not under a refine or an IdMap)
    in_parts = isinstance(builder.cpu_index, faiss.IndexIVF) and (plan.ray_actors is not None or on_disk)
    return IndexChoice(index_plan, parents, search, exact_store.resolve_kind(store_kind, search), choice,
                       on_disk, in_parts, _train_size(index_plan, builder.cpu_index, n)), builder


def _resolve(factory: str, n: int, resolution: int | None, cells: ShardCells):
    """Resolve the factory; for IVFH3 also return the sorted parent ids (one list each)."""
    index_plan = index_factory.resolve(factory, n, resolution, n_parents=0)
    if index_plan.h3_list_res is None:
        return index_plan, None
    parents = cells.parents(index_plan.h3_list_res)[0]
    return index_factory.resolve(factory, n, resolution, n_parents=len(parents)), parents


def _lists_on_disk(asked: bool | None, index_plan: IndexPlan, builder: IndexBuilder, n: int) -> bool:
    """Whether the inverted lists go to ``lists.ivfdata``: as asked (refused for an index without
    mappable lists; the plan refused it already when the factory was known), else (None) when the
    lists' codes and ids would take more than half of the machine's memory."""
    ivf = builder.cpu_index
    mappable = disk.lists_mappable(ivf) and not builder.fast_scan
    lists_bytes = disk.lists_bytes(ivf, n) if mappable else 0
    return disk.lists_on_disk(asked, mappable, lists_bytes, index_plan.factory, MAPPABLE_EXAMPLE)


def _train_size(index_plan: IndexPlan, index: faiss.Index, n: int) -> int:
    if index.is_trained:
        return 0
    ivf = faiss.try_extract_index_ivf(index)
    kmeans_lists = ivf.nlist if ivf is not None and index_plan.h3_list_res is None else None
    return train_size(n, kmeans_lists)


def train(plan: BuildPlan, choice: IndexChoice, builder: IndexBuilder, shards: list[ShardFile],
          counts: list[int]) -> faiss.Index | None:
    """Train the builder's index (IVFH3 centroids, or k-means/codec training on a seeded sample).
    A build in parts returns its trained empty index, the one a killed build saved when it was
    trained for the same choice (its filled parts are kept), else None."""
    trained = parts.saved_trained(plan.work, choice, plan.seed) if choice.in_parts else None
    if trained is not None:
        return trained
    if choice.parents is not None:
        builder.set_h3_centroids(h3_centroids(iter_vectors(shards), choice.parents, choice.index_plan.h3_list_res))
    if not builder.index.is_trained:
        sample = sample_vectors(shards, counts, choice.train_size, plan.seed)
        builder.train(sample)
        del sample
    return None


def add_all(plan: BuildPlan, choice: IndexChoice, builder: IndexBuilder, trained: faiss.Index | None,
            shards: list[ShardFile], counts: list[int], staging: Path, timer) -> faiss.Index:
    """The filled index, its search settings applied: vectors added shard by shard, or as parts
    (Ray tasks or here) merged into lists in memory or in ``staging/lists.ivfdata``."""
    if choice.in_parts:
        if trained is None:
            trained = parts.save_trained(plan.work, builder.trained_empty(), choice, plan.seed)
        part_files = parts.fill_parts(plan, shards, counts, trained, choice)
        t_merge = time.perf_counter()
        index = builder.finish_merged(distributed.merge_parts(
            trained, part_files, staging / manifest.LISTS if choice.on_disk else None))
        timer.add("merge", t_merge)
    else:
        with progress_bar(plan, sum(counts), "add to index", "vec") as bar:
            for ids, xb in iter_vectors(shards):
                lists = None
                if choice.parents is not None:
                    lists = list_numbers(ids, choice.parents, choice.index_plan.h3_list_res)
                builder.add(xb, ids, lists)
                bar.update(len(ids))
        index = builder.finish()
    apply_search_settings(index, choice.search)
    return index
