"""CSV galleries: the rows of a lat,lng file instead of H3 cells (GeoCLIP's own 100K gallery, say).

Ids are row numbers; a shard is a run of ``CSV_SHARD_ROWS`` rows.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from geoindex.cells.gallery import CellBatch
from geoindex.cells.landmask import is_land
from geoindex.errors import GalleryFileError

CSV_SHARD_ROWS = 100_000


def read_gallery_csv(path: str | Path) -> np.ndarray:
    """A CSV of lat,lng rows (header optional; columns named lat/latitude and lng/lon/longitude
    picked by name when a header exists) -> (n, 2) float64 lat, lng degrees.

    Raises GalleryFileError naming the first bad row (1-based line number) and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise GalleryFileError(f"gallery CSV {str(path)!r} does not exist: give a path to a lat,lng CSV")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise GalleryFileError(
            f"gallery CSV {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason}): save it as UTF-8 CSV"
        ) from None
    except (OSError, csv.Error) as e:
        raise GalleryFileError(f"gallery CSV {str(path)!r} cannot be read ({e}): give a readable lat,lng CSV") from None
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
    width = len(rows[0]) if start else 2  # a header names the columns; without one a row is lat,lng
    out = np.empty((len(rows) - start, 2), dtype=np.float64)
    for k, row in enumerate(rows[start:]):
        line = k + start + 1
        if row and len(row) != width:
            raise GalleryFileError(
                f"gallery CSV {str(path)!r} line {line}: {','.join(row)!r} has {len(row)} fields, "
                f"{'the header has' if start else 'a lat,lng row has'} {width}: fix or delete that line"
            )
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
