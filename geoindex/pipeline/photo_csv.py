"""A photos CSV: ``image,lat,lng`` rows, every one checked before any image is opened.

The header names the columns (any case): ``image`` (or ``path``, ``file``, ``img_file`` as in
MP-16's CSV), ``lat``/``latitude`` and ``lng``/``lon``/``long``/``longitude``; other columns are
ignored. Relative image paths are taken from ``image_root`` (default: the CSV's folder). A bad row
(a missing field, a coordinate that is not a number, NaN, out of range) raises
:class:`TrainingDataError` naming the line, the value and the fix; all bad rows are counted first.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoindex.cells.coordinates import LAT_NAMES, LNG_NAMES, duplicate_column
from geoindex.errors import TrainingDataError

IMAGE_NAMES = ("image", "path", "file", "filename", "img_file", "image_path")
SHOW_BAD = 3  # bad rows quoted in the error


@dataclass(frozen=True)
class Photos:
    """The rows of a photos CSV: resolved image paths, (n, 2) float64 lat, lng, and each row's line."""

    images: list[Path]
    latlng: np.ndarray
    lines: np.ndarray  # (n,) int64: the CSV line of each row (1 = the header)
    csv_sha256: str

    def __len__(self) -> int:
        return len(self.images)


def _check_row(row: list[str], cols: list[int], width: int) -> tuple[str, float, float, str | None]:
    """(image path, lat, lng, None) for a good row, or (..., the reason it is bad)."""
    image_col, lat_col, lng_col = cols
    if len(row) <= max(cols):
        return "", 0.0, 0.0, f"has {len(row)} fields, the header {width}"
    name, lat_text, lng_text = row[image_col].strip(), row[lat_col].strip(), row[lng_col].strip()
    try:
        lat, lng = float(lat_text), float(lng_text)
    except ValueError:
        return name, 0.0, 0.0, f"lat, lng = {lat_text!r}, {lng_text!r} is not two numbers"
    if not (math.isfinite(lat) and math.isfinite(lng)):
        return name, lat, lng, f"lat, lng = {lat_text}, {lng_text} is not finite"
    if abs(lat) > 90 or abs(lng) > 180:
        return name, lat, lng, f"lat, lng = {lat_text}, {lng_text} is outside [-90, 90] x [-180, 180] (is it lng,lat?)"
    if not name:
        return name, lat, lng, "has an empty image path"
    return name, lat, lng, None


def read_photos(path: str | Path, image_root: str | Path | None = None) -> Photos:
    """Read and check every row of a photos CSV (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"photos CSV {str(path)!r} does not exist: give a CSV of image,lat,lng rows")
    root = Path(image_root) if image_root is not None else path.parent
    if not root.is_dir():
        raise TrainingDataError(f"--image-root {str(root)!r} is not a folder: give the folder the image paths start from")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TrainingDataError(f"photos CSV {str(path)!r} is not UTF-8 text ({e}): save it as UTF-8") from e
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if not header:
        raise TrainingDataError(f"photos CSV {str(path)!r} is empty: it needs a header image,lat,lng and one row per photo")
    names = [h.strip().lower() for h in header]
    if why := duplicate_column(header, LAT_NAMES, LNG_NAMES):
        raise TrainingDataError(f"photos CSV {str(path)!r} header {header} {why}")
    cols = []
    for wanted, label in ((IMAGE_NAMES, "image"), (LAT_NAMES, "lat"), (LNG_NAMES, "lng")):
        found = [i for i, n in enumerate(names) if n in wanted]
        if not found:
            raise TrainingDataError(
                f"photos CSV {str(path)!r} header {header} has no {label} column: the header must name "
                f"image, lat and lng columns (e.g. image,lat,lng)"
            )
        cols.append(found[0])
    images, coords, lines, bad = [], [], [], []
    for line, row in enumerate(rows, start=2):
        if not row or not any(field.strip() for field in row):
            continue  # blank lines
        name, lat, lng, reason = _check_row(row, cols, len(header))
        if reason is not None:
            bad.append(f"line {line} {reason}")
            continue
        image = Path(name)
        images.append(image if image.is_absolute() else root / image)
        coords.append((lat, lng))
        lines.append(line)
    if bad:
        shown = "; ".join(bad[:SHOW_BAD]) + (f"; and {len(bad) - SHOW_BAD} more" if len(bad) > SHOW_BAD else "")
        raise TrainingDataError(
            f"photos CSV {str(path)!r}: {len(bad)} bad row{'s' if len(bad) > 1 else ''}: {shown}. "
            "Fix or drop those rows (each needs an image path and lat, lng in degrees)"
        )
    if not images:
        raise TrainingDataError(f"photos CSV {str(path)!r} has a header but no rows: add one image,lat,lng row per photo")
    return Photos(images, np.asarray(coords, dtype=np.float64), np.asarray(lines, dtype=np.int64),
                  hashlib.sha256(raw).hexdigest())
