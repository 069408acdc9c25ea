"""The gallery's cell ids as the shards hold them, never concatenated in the driver.

A finished shard holds its cells sorted by id and shards come in root order, so the gallery is in
id order shard after shard (:class:`~geoindex.store.hot_writer.ShardRows` checks it): a cell's row
in the index directory's cell-ordered files (hot columns, exact store) is its shard's offset plus
its place in the shard. What the index stage needs of the whole gallery (the H3 parents of IVFH3's
lists, the parents' sizes for a ``--max-memory`` prediction) is reduced shard by shard.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from geoindex.cells.h3ids import cell_to_parent
from geoindex.errors import IndexDirError
from geoindex.store.hot_writer import ShardRows
from geoindex.store.shards import ShardFile


class ShardCells:
    """The cell ids of ``shards`` (finished shard files, gallery order): counts, rows, parents."""

    def __init__(self, shards: list[ShardFile]):
        self.shards = shards
        counts, bounds = [], []
        for shard in shards:
            cell = self._read(shard)
            counts.append(len(cell))
            if len(cell):
                bounds.append((int(cell[0]), int(cell[-1])))
        self.rows = ShardRows(counts, bounds)
        self.counts = self.rows.counts

    def __len__(self) -> int:
        return self.rows.total

    def __iter__(self) -> Iterator[np.ndarray]:
        """Each shard's (m,) int64 sorted cell ids, in shard order (empty shards too)."""
        return (self._read(shard) for shard in self.shards)

    def at(self, rows: np.ndarray) -> np.ndarray:
        """(m,) int64 ids of the cells at sorted gallery ``rows``."""
        out = np.empty(len(rows), dtype=np.int64)
        for start, count, cell in zip(self.rows.offsets.tolist(), self.counts, self):
            lo, hi = np.searchsorted(rows, [start, start + count])
            out[lo:hi] = cell[rows[lo:hi] - start]
        return out

    def parents(self, res: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct H3 parents at ``res`` (p,) int64, cells below each (p,) int64)."""
        ids, sizes = [], []
        for cell in self:
            u, k = np.unique(cell_to_parent(cell, res), return_counts=True)
            ids.append(u)
            sizes.append(k)
        if not ids:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        parents, where = np.unique(np.concatenate(ids), return_inverse=True)
        return parents, np.bincount(where, weights=np.concatenate(sizes)).astype(np.int64)

    @staticmethod
    def _read(shard: ShardFile) -> np.ndarray:
        cell = shard.read("cell")["cell"]
        if len(cell) > 1 and not bool(np.all(cell[1:] > cell[:-1])):
            raise IndexDirError(f"internal: the cells of shard {shard.path} are not sorted by id")
        return cell
