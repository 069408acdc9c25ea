"""The gallery: which coordinates the index holds.

Either every H3 cell at a resolution (``cells="land"`` keeps a cell when its centre or any
boundary vertex is on land; ``cells="all"`` keeps oceans too), or the rows of a lat,lng CSV
(for example GeoCLIP's own 100K gallery). Galleries are enumerated in shards so memory stays
bounded at any resolution: an H3 gallery's shard is one cell at resolution ``max(0, R - 5)``
and its children at R (at most 7^5 = 16,807 cells); a CSV gallery's shard is a run of rows.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h3
import h3.api.numpy_int as h3n
import numpy as np

from geoindex.errors import GalleryFileError, InvalidArgumentError
from geoindex.landmask import is_land

MAX_LOCAL_RESOLUTION = 9  # above this the gallery has > 4.8e9 cells: distributed build only
SHARD_DEPTH = 5  # an H3 shard is a cell this many resolutions above the gallery (<= 16,807 cells)
CSV_SHARD_ROWS = 100_000
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


def read_gallery_csv(path: str | Path) -> np.ndarray:
    """A CSV of lat,lng rows (header optional; columns named lat/latitude and lng/lon/longitude
    picked by name when a header exists) -> (n, 2) float64 lat, lng degrees.

    Raises GalleryFileError naming the first bad row (1-based line number) and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise GalleryFileError(f"gallery CSV {str(path)!r} does not exist: give a path to a lat,lng CSV")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise GalleryFileError(f"gallery CSV {str(path)!r} is empty: it needs lat,lng rows")
    lat_col, lng_col, start = 0, 1, 0
    header = [h.strip().lower() for h in rows[0]]
    if not _is_number(header[0] if header else ""):
        lat_names, lng_names = ("lat", "latitude"), ("lng", "lon", "long", "longitude")
        try:
            lat_col = next(i for i, h in enumerate(header) if h in lat_names)
            lng_col = next(i for i, h in enumerate(header) if h in lng_names)
        except StopIteration:
            raise GalleryFileError(
                f"gallery CSV {str(path)!r} header {rows[0]} has no lat and lng/lon columns: "
                "name them lat,lng (or LAT,LON) or drop the header"
            ) from None
        start = 1
    out = np.empty((len(rows) - start, 2), dtype=np.float64)
    for k, row in enumerate(rows[start:]):
        line = k + start + 1
        try:
            lat, lng = float(row[lat_col]), float(row[lng_col])
        except (ValueError, IndexError):
            raise GalleryFileError(
                f"gallery CSV {str(path)!r} line {line}: {','.join(row)!r} is not a lat,lng pair of "
                "numbers: fix or delete that line"
            ) from None
        if not (np.isfinite(lat) and np.isfinite(lng) and abs(lat) <= 90 and abs(lng) <= 180):
            raise GalleryFileError(
                f"gallery CSV {str(path)!r} line {line}: lat, lng = {lat}, {lng} is outside "
                "[-90, 90] x [-180, 180]: fix that line (is it lng,lat?)"
            )
        out[k] = lat, lng
    if len(out) == 0:
        raise GalleryFileError(f"gallery CSV {str(path)!r} has a header but no rows")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_shards(latlng: np.ndarray) -> Iterator[tuple[int, CellBatch]]:
    """(shard number, batch) over a CSV gallery; ids are row numbers."""
    for shard, start in enumerate(range(0, len(latlng), CSV_SHARD_ROWS)):
        part = latlng[start : start + CSV_SHARD_ROWS]
        ids = np.arange(start, start + len(part), dtype=np.int64)
        yield shard, CellBatch(ids, part[:, 0].copy(), part[:, 1].copy(), is_land(part[:, 0], part[:, 1]))
