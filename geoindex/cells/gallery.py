"""The gallery: which coordinates the index holds.

Either every H3 cell at a resolution (``cells="land"`` keeps a cell when its centre or any
boundary vertex is on land; ``cells="all"`` keeps oceans too), or the rows of a lat,lng CSV
(:mod:`geoindex.cells.csv_gallery`, for example GeoCLIP's own 100K gallery). Galleries are
enumerated in shards so memory stays bounded at any resolution: an H3 gallery's shard is one
cell at resolution ``max(0, R - 5)`` and its children at R (at most 7^5 = 16,807 cells).
"""

from __future__ import annotations

from dataclasses import dataclass

import h3
import h3.api.numpy_int as h3n
import numpy as np

from geoindex.cells.landmask import is_land
from geoindex.errors import InvalidArgumentError

MAX_LOCAL_RESOLUTION = 9  # above this the gallery has > 4.8e9 cells: distributed build only
SHARD_DEPTH = 5  # an H3 shard is a cell this many resolutions above the gallery (<= 16,807 cells)
CELL_CHOICES = ("land", "all")


@dataclass
class CellBatch:
    """One shard of the gallery: parallel arrays, one row per gallery point.

    ``cell`` (n,) int64: the H3 cell id, or the CSV row number for CSV galleries (the FAISS id).
    ``lat``, ``lng`` (n,) float64 degrees; ``is_land`` (n,) bool (centre or a vertex on land).
    """

    cell: np.ndarray
    lat: np.ndarray
    lng: np.ndarray
    is_land: np.ndarray

    def __len__(self) -> int:
        return len(self.cell)

    @property
    def latlng(self) -> np.ndarray:
        """(n, 2) float64 lat, lng degrees."""
        return np.column_stack((self.lat, self.lng))


def validate_resolution(resolution: object) -> int:
    """Accept 0..9 (int or integer string); anything else raises InvalidArgumentError."""
    try:
        res = int(str(resolution), 10)
    except ValueError as e:
        raise InvalidArgumentError(
            f"resolution {resolution!r} is not an integer: give an H3 resolution 0-{MAX_LOCAL_RESOLUTION}"
        ) from e
    if 10 <= res <= 15:
        raise InvalidArgumentError(
            f"resolution {res} has {h3.get_num_cells(res):,} cells, past one machine: "
            "it needs the distributed (Ray) build; use --resolution 0-9 here"
        )
    if not 0 <= res <= MAX_LOCAL_RESOLUTION:
        raise InvalidArgumentError(
            f"resolution {res} is out of range: H3 resolutions here are 0-{MAX_LOCAL_RESOLUTION}"
        )
    return res


def validate_cells(cells: str) -> str:
    if cells not in CELL_CHOICES:
        raise InvalidArgumentError(f"--cells {cells!r} is not one of {CELL_CHOICES}: use land or all")
    return cells


def shard_resolution(resolution: int) -> int:
    return max(0, resolution - SHARD_DEPTH)


def h3_shard_roots(resolution: int) -> list[int]:
    """Sorted H3 cell ids (int) at ``shard_resolution``: one shard each."""
    res0 = sorted(int(c) for c in h3n.get_res0_cells())
    shard_res = shard_resolution(resolution)
    if shard_res == 0:
        return res0
    return sorted(int(c) for r in res0 for c in h3n.cell_to_children(r, shard_res))


def h3_shard(root: int, resolution: int, cells: str) -> CellBatch:
    """The gallery cells below shard ``root`` at ``resolution``, sorted by cell id."""
    children = np.sort(h3n.cell_to_children(np.uint64(root), resolution)).astype(np.int64)
    centres = np.array([h3n.cell_to_latlng(c) for c in children], dtype=np.float64).reshape(-1, 2)
    land = is_land(centres[:, 0], centres[:, 1])
    # Coastal cells: land when any boundary vertex is, even with the centre at sea. One
    # vectorised mask lookup for all vertices of all sea-centred cells in the shard.
    sea = np.flatnonzero(~land)
    if len(sea):
        boundaries = [h3n.cell_to_boundary(children[i]) for i in sea]
        counts = np.fromiter(map(len, boundaries), np.int64, len(boundaries))
        vertices = np.array([v for b in boundaries for v in b], dtype=np.float64)
        hits = is_land(vertices[:, 0], vertices[:, 1]).astype(np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        land[sea] = np.add.reduceat(hits, starts) > 0
    keep = land if cells == "land" else np.ones(len(children), dtype=bool)
    return CellBatch(children[keep], centres[keep, 0], centres[keep, 1], land[keep])


def cell_areas_km2(cell: np.ndarray) -> np.ndarray:
    """(n,) int64 H3 ids -> (n,) float64 exact cell areas in km^2."""
    return np.fromiter((h3n.cell_area(np.uint64(c), "km^2") for c in cell), np.float64, len(cell))
