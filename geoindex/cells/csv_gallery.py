"""CSV galleries: the rows of a lat,lng file instead of H3 cells (GeoCLIP's own 100K gallery, say).

Ids are row numbers; a shard is a run of ``CSV_SHARD_ROWS`` rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from geoindex.cells.coordinates import read_latlng
from geoindex.cells.gallery import CellBatch
from geoindex.cells.landmask import is_land

CSV_SHARD_ROWS = 100_000


def read_gallery_csv(path: str | Path) -> np.ndarray:
    """A CSV of lat,lng rows (header optional; see :mod:`geoindex.cells.coordinates`) -> (n, 2)
    float64 lat, lng degrees. Raises GalleryFileError naming the first bad row and the fix."""
    return read_latlng(path, what="gallery CSV")


def csv_shards(latlng: np.ndarray) -> Iterator[tuple[int, CellBatch]]:
    """(shard number, batch) over a CSV gallery; ids are row numbers."""
    for shard, start in enumerate(range(0, len(latlng), CSV_SHARD_ROWS)):
        part = latlng[start : start + CSV_SHARD_ROWS]
        ids = np.arange(start, start + len(part), dtype=np.int64)
        yield shard, CellBatch(ids, part[:, 0].copy(), part[:, 1].copy(), is_land(part[:, 0], part[:, 1]))
