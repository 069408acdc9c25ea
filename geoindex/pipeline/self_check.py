"""The build's self-check: the finished index answers its own gallery as a query would.

One check for every gallery kind (:func:`self_check`): up to 256 seeded gallery vectors are the
queries, the index answers them through the search a reader runs (stored search parameters,
re-ranking included), and the answers are compared with exact (brute-force) search over every
vector. A source hands over its gallery as a :class:`CheckGallery` and its search as a function;
:func:`cell_check` gives the cell build's (shard files, re-ranking with the location encoder).

Recorded in the manifest and printed in the build summary; ``bench_build.py`` measures the same
on real photo locations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import faiss
import numpy as np

from geoindex.locate.rerank import ExactReranker
from geoindex.pipeline.shard_cells import ShardCells
from geoindex.store.cell_table import CellTable
from geoindex.store.shards import ShardFile, iter_vectors, sample_vectors

CHECK_QUERIES = 256

Search = Callable[[np.ndarray, int], np.ndarray]  # (m, 512) queries, k -> (m, >= k) ids, best first


@dataclass(frozen=True)
class CheckGallery:
    """What the self-check reads of a gallery of ``n`` vectors: ``queries(m, seed)`` -> ((m,) int64
    ids, (m, 512) float32 vectors) of m seeded distinct gallery rows, and ``vectors()`` -> every
    ((b,) ids, (b, 512) float32 vectors) block, in any order."""

    n: int
    queries: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
    vectors: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def self_check(search: Search, gallery: CheckGallery, seed: int) -> dict:
    """Query ``search`` with up to 256 seeded gallery vectors (``seed + 1``).

    ``self_hit_at_1``: share whose top-1 is the row itself; ``recall_at_10``: overlap of the
    top-10 with exact (brute-force) top-10 over all vectors.
    """
    n = gallery.n
    m = min(CHECK_QUERIES, n)
    own, xq = gallery.queries(m, seed + 1)
    k = min(10, n)
    I = search(xq, k)[:, :k]
    best_d = np.full((m, k), -np.inf, dtype=np.float32)
    best_i = np.full((m, k), -1, dtype=np.int64)
    for ids, xb in gallery.vectors():
        d = xq @ xb.T
        cand_d = np.concatenate([best_d, d], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(ids, d.shape)], axis=1)
        top = np.argpartition(-cand_d, k - 1, axis=1)[:, :k]
        best_d = np.take_along_axis(cand_d, top, 1)
        best_i = np.take_along_axis(cand_i, top, 1)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(I, best_i)])
    return {
        "queries": int(m),
        "self_hit_at_1": round(float(np.mean(I[:, 0] == own)), 4),
        "recall_at_10": round(float(recall), 4),
    }


def cell_check(index: faiss.Index, shards: list[ShardFile], cells: ShardCells, rerank: int = 0, model=None,
               table: CellTable | None = None) -> tuple[Search, CheckGallery]:
    """The cell build's search and gallery for :func:`self_check`: the finished ``index`` with its
    stored search parameters, the top ``rerank`` re-scored exactly with the location encoder
    ``model``; the gallery's vectors as the shard files hold them.

    ``table``: the index's cell table (the hot columns just written, memory-mapped), where the
    re-ranker finds the candidates' centres; needed when ``rerank``. Nothing per cell is held.
    """
    n = len(cells)

    def search(xq: np.ndarray, k: int) -> np.ndarray:
        D, I = index.search(xq, max(k, min(rerank, n)))
        if rerank:
            def latlng_of(ids):
                rows = np.searchsorted(table.cell, ids)
                return np.column_stack((table.lat[rows], table.lng[rows]))

            D, I = ExactReranker(latlng_of, model=model).rerank(xq, D, I, rerank)
        return I

    def queries(m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        own = cells.at(np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False)))
        return own, sample_vectors(shards, cells.counts, m, seed)

    return search, CheckGallery(n, queries, lambda: iter_vectors(shards))
