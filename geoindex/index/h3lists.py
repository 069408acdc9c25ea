"""IVFH3 inverted lists: one list per H3 parent cell, centroids from the children's vectors.

A gallery at resolution R gets one list per distinct parent at the plan's list resolution p; list
numbers follow the sorted parent ids. The centroid of a list is the L2-normalised mean of its
children's vectors, and every vector is pre-assigned to its parent's list (no k-means).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from geoindex.cells.h3ids import cell_to_parent
from geoindex.constants import EMBED_DIM


def list_parents(cells: np.ndarray, list_res: int) -> np.ndarray:
    """(n,) int64 gallery cell ids -> sorted distinct parents at ``list_res``: list k is parent k."""
    return np.unique(cell_to_parent(cells, list_res))


def list_numbers(ids: np.ndarray, parents: np.ndarray, list_res: int) -> np.ndarray:
    """(n,) int64 cell ids -> (n,) int64 list number of each (its parent's position in ``parents``)."""
    return np.searchsorted(parents, cell_to_parent(ids, list_res))


def h3_centroids(vectors: Iterable[tuple[np.ndarray, np.ndarray]], parents: np.ndarray,
                 list_res: int) -> np.ndarray:
    """(len(parents), 512) float32: L2-normalised mean of each parent's children, from
    (ids (n,) int64, xb (n, 512) float32) batches covering the gallery."""
    sums = np.zeros((len(parents), EMBED_DIM), dtype=np.float64)
    for ids, xb in vectors:
        lists = list_numbers(ids, parents, list_res)
        order = np.argsort(lists, kind="stable")
        lists, xb = lists[order], xb[order]
        starts = np.flatnonzero(np.r_[True, lists[1:] != lists[:-1]])
        sums[lists[starts]] += np.add.reduceat(xb.astype(np.float64), starts, axis=0)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)
