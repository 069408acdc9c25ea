"""The build's writer of the hot columns (``DIR/hot/*.npy``, :mod:`geoindex.store.cell_table`), streamed
from the shards instead of read back from DuckDB.

Reading them back meant one ``ORDER BY cell`` and three dictionary-encoding joins over the whole
table: every column of every cell in the driver's memory at once (about 1 GB at res 7 in numpy,
several more in DuckDB's sort). Shards already hold the cells in id order (sorted within a shard,
shards in root order: :class:`ShardRows` checks it), so each column is filled a shard at a time
into a memory-mapped ``.npy``: the driver holds one shard and the distinct strings, nothing per cell.
The files are the same bytes as the read-back's (a test compares them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from geoindex.atomic import open_memmap
from geoindex.errors import IndexDirError
from geoindex.store.cell_table import _NUMERIC, HOT, STRING_COLUMNS, hot_files

DTYPES = {"cell": np.int64, "lat": np.float64, "lng": np.float64}
CODE_DTYPE = np.int32


class ShardRows:
    """Where each shard's rows go in cell order: ``offsets[i]`` is shard ``i``'s first row.

    Args:
        counts: Rows per shard, in shard order.
        bounds: (first, last) cell id of each non-empty shard, in shard order.

    Raises:
        IndexDirError: The shards' ids are not strictly increasing across shards (a gallery whose
            shards overlap or come out of order: a bug, never a user's doing).
    """

    def __init__(self, counts: list[int], bounds: list[tuple[int, int]]):
        last = None
        for first, end in bounds:
            if first > end or (last is not None and first <= last):
                raise IndexDirError(f"internal: shard ids are not in increasing order ({last} then {first}..{end})")
            last = end
        self.counts = list(counts)
        self.offsets = np.concatenate(([0], np.cumsum(self.counts, dtype=np.int64)))[:-1]
        self.total = int(sum(self.counts))


def write_hot_columns_streaming(folder: Path, meta: Callable[[], Iterable[dict[str, np.ndarray]]],
                                rows: ShardRows) -> tuple[str, ...]:
    """Write ``folder/hot/`` from shard metadata; return the names written, relative to ``folder``.

    ``meta()`` yields each shard's columns (``cell``, ``lat``, ``lng`` and the string columns as
    fixed-width unicode, ``''`` for NULL), in shard order; it is called twice (the distinct
    strings, then the rows). Codes: 0 for NULL, else 1 + the value's rank among the column's
    sorted distinct values (the read-back's SQL, ``ORDER BY`` on the UTF-8 bytes: code-point order).
    """
    hot = folder / HOT
    hot.mkdir(exist_ok=True)
    distinct: dict[str, set[str]] = {c: set() for c in STRING_COLUMNS}
    for shard in meta():
        for c in STRING_COLUMNS:
            distinct[c].update(np.unique(shard[c]).tolist())
    values = {c: sorted(distinct[c] - {""}) for c in STRING_COLUMNS}
    lookup = {c: np.array(values[c], dtype=str) for c in STRING_COLUMNS}
    # allocated whole before the first write: a full disk is one line, never SIGBUS
    outs = {c: open_memmap(hot / f"{c}.npy", DTYPES[c], (rows.total,)) for c in _NUMERIC}
    outs |= {c: open_memmap(hot / f"{c}.npy", CODE_DTYPE, (rows.total,)) for c in STRING_COLUMNS}
    for start, count, shard in _placed(meta(), rows):
        for c in _NUMERIC:
            outs[c][start : start + count] = shard[c]
        for c in STRING_COLUMNS:
            outs[c][start : start + count] = _codes(shard[c], lookup[c])
    for out in outs.values():
        out.flush()
    del outs
    (hot / "values.json").write_text(json.dumps({c: [None, *values[c]] for c in STRING_COLUMNS}))
    return hot_files()


def _placed(shards: Iterable[dict[str, np.ndarray]], rows: ShardRows) -> Iterator[tuple[int, int, dict]]:
    """(first row, rows, columns) per shard with rows, checked against ``rows``' counts."""
    counts = iter(zip(rows.offsets.tolist(), rows.counts))
    for shard in shards:
        start, count = next(counts)
        if len(shard["cell"]) != count:
            raise IndexDirError(f"internal: a shard has {len(shard['cell'])} rows, {count} were counted")
        if count:
            yield start, count, shard


def _codes(column: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """(m,) int32 codes of fixed-width unicode ``column`` against the sorted distinct ``lookup``."""
    codes = np.zeros(len(column), dtype=CODE_DTYPE)
    present = column != ""
    if present.any():
        codes[present] = np.searchsorted(lookup, column[present]) + 1
    return codes
