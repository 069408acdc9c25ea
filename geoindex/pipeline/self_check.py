"""The build's self-check: the finished index answers its own gallery as a query would.

Recorded in the manifest and printed in the build summary; ``bench_build.py`` measures the same
on real photo locations.
"""

from __future__ import annotations

import faiss
import numpy as np

from geoindex.locate.rerank import ExactReranker
from geoindex.pipeline.shard_cells import ShardCells
from geoindex.store.cell_table import CellTable
from geoindex.store.shards import ShardFile, iter_vectors, sample_vectors

CHECK_QUERIES = 256


def self_check(index: faiss.Index, shards: list[ShardFile], cells: ShardCells, seed: int, rerank: int = 0,
               model=None, table: CellTable | None = None) -> dict:
    """Query the finished index with the exact vectors of up to 256 seeded gallery cells, as a
    query would: with the stored search parameters, re-ranking the top ``rerank`` exactly.

    ``table``: the index's cell table (the hot columns just written, memory-mapped), where the
    re-ranker finds the candidates' centres; needed when ``rerank``. Nothing per cell is held.

    ``self_hit_at_1``: share whose top-1 is the cell itself; ``recall_at_10``: overlap of the
    top-10 with exact (brute-force) top-10 over all vectors.
    """
    n = len(cells)
    m = min(CHECK_QUERIES, n)
    xq = sample_vectors(shards, cells.counts, m, seed + 1)
    own = cells.at(np.sort(np.random.default_rng(seed + 1).choice(n, size=m, replace=False)))
    k = min(10, n)
    D, I = index.search(xq, max(k, min(rerank, n)))
    if rerank:
        def latlng_of(ids):
            rows = np.searchsorted(table.cell, ids)
            return np.column_stack((table.lat[rows], table.lng[rows]))

        D, I = ExactReranker(latlng_of, model=model).rerank(xq, D, I, rerank)
    I = I[:, :k]
    best_d = np.full((m, k), -np.inf, dtype=np.float32)
    best_i = np.full((m, k), -1, dtype=np.int64)
    for ids, xb in iter_vectors(shards):
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
