"""A reference photos CSV: ``image,lat,lng`` rows (checked by the shared reader,
:func:`geoindex.pipeline.photo_csv.read_photos`) plus every other column kept as metadata.

Metadata values stay strings (``taken_at``, ``source``, ``url``, ...): the gallery returns them as
they were written, it never interprets them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from geoindex.cells.coordinates import LAT_NAMES, LNG_NAMES
from geoindex.pipeline.photo_csv import IMAGE_NAMES, Photos, read_photos


@dataclass(frozen=True)
class ReferenceRows:
    """Checked rows: ``photos`` (paths, (n, 2) float64 lat, lng, CSV lines) and, per row, the image
    path as written in the CSV and a dict of the other columns."""

    photos: Photos
    written: list[str]
    metadata: list[dict[str, str]]
    columns: list[str]


def read_reference_rows(path: str | Path, image_root: str | Path | None = None) -> ReferenceRows:
    """Read and check every row (a bad row fails the whole file before any image is opened)."""
    photos = read_photos(path, image_root)
    text = Path(path).read_bytes().decode("utf-8-sig")
    rows = csv.reader(text.splitlines())
    header = [h.strip() for h in next(rows)]
    lower = [h.lower() for h in header]
    used = {next(i for i, h in enumerate(lower) if h in names) for names in (IMAGE_NAMES, LAT_NAMES, LNG_NAMES)}
    image_col = next(i for i, h in enumerate(lower) if h in IMAGE_NAMES)
    extra = [i for i in range(len(header)) if i not in used and header[i]]
    by_line = {}
    for line, row in enumerate(rows, start=2):  # numbered as read_photos numbers them
        by_line[line] = row
    written, metadata = [], []
    for line in photos.lines:
        row = by_line[int(line)]
        written.append(row[image_col].strip())
        metadata.append({header[i]: row[i] for i in extra if i < len(row)})
    return ReferenceRows(photos, written, metadata, [header[i] for i in extra])
