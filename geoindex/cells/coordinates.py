"""Files of coordinates: CSV or Parquet of lat, lng rows, read in chunks and checked as a gallery is.

One reader for every place a user hands geoindex a list of points: a custom gallery
(``build_index --gallery-csv``) and the location embeddings of ``geoindex-embed``. Columns are
picked by name when there is a header (``lat``/``latitude`` and ``lng``/``lon``/``long``/
``longitude``, any case); a CSV without a header is ``lat,lng``. A bad row raises
:class:`GalleryFileError` naming the file, the row and the fix, before anything is written.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from geoindex.errors import GalleryFileError

LAT_NAMES = ("lat", "latitude")
LNG_NAMES = ("lng", "lon", "long", "longitude")
SUFFIXES = (".csv", ".parquet")  # what geoindex-embed takes
CHUNK_ROWS = 65_536


def iter_latlng(path: str | Path, chunk_rows: int = CHUNK_ROWS, what: str = "coordinates") -> Iterator[np.ndarray]:
    """(m, 2) float64 lat, lng chunks of a file, in file order: Parquet when it ends in ``.parquet``,
    else CSV text."""
    path = Path(path)
    if not path.is_file():
        raise GalleryFileError(f"{what} file {str(path)!r} does not exist: give a path to a lat,lng file")
    if path.suffix.lower() == ".parquet":
        yield from _iter_parquet(path, chunk_rows, what)
    else:
        yield from _iter_csv(path, chunk_rows, what)


def read_latlng(path: str | Path, what: str = "coordinates") -> np.ndarray:
    """The whole file as one (n, 2) float64 array (n >= 1)."""
    return np.concatenate(list(iter_latlng(path, what=what)))


def count_latlng(path: str | Path, what: str = "coordinates") -> int:
    """Rows in the file, every one checked (a bad row fails here, before any work on the others)."""
    return sum(len(chunk) for chunk in iter_latlng(path, what=what))


def duplicate_column(names: list[str], *synonyms: tuple[str, ...]) -> str | None:
    """Why a header is ambiguous, or None: a name given twice (any case), or two columns that are
    both one of ``synonyms`` (e.g. ``lat`` and ``latitude``). Every reader of a user's CSV calls it:
    taking the first of two lat columns silently is a guess."""
    lowered = [str(n).strip().lower() for n in names]
    for i, name in enumerate(lowered):
        if name and name in lowered[:i]:
            return (f"names column {names[i].strip()!r} twice (columns {lowered.index(name) + 1} and {i + 1}): "
                    "keep one, rename or delete the other")
    for group in synonyms:
        found = [i for i, name in enumerate(lowered) if name in group]
        if len(found) > 1:
            a, b = (names[i].strip() for i in found[:2])
            return f"has two columns for the same value, {a!r} and {b!r}: keep one, rename or delete the other"
    return None


def _columns(names: list[str], path: Path, what: str, shown: object) -> tuple[int, int]:
    lowered = [n.strip().lower() for n in names]
    if why := duplicate_column(names, LAT_NAMES, LNG_NAMES):
        raise GalleryFileError(f"{what} file {str(path)!r} header {shown} {why}")
    try:
        return (next(i for i, h in enumerate(lowered) if h in LAT_NAMES),
                next(i for i, h in enumerate(lowered) if h in LNG_NAMES))
    except StopIteration:
        raise GalleryFileError(
            f"{what} file {str(path)!r} header {shown} has no lat and lng/lon columns: "
            "name them lat,lng (or LAT,LON)" + (" or drop the header" if path.suffix.lower() == ".csv" else "")
        ) from None


def _check_range(chunk: np.ndarray, first_row: int, path: Path, what: str, unit: str) -> None:
    bad = ~np.isfinite(chunk).all(axis=1) | (np.abs(chunk[:, 0]) > 90) | (np.abs(chunk[:, 1]) > 180)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise GalleryFileError(
            f"{what} file {str(path)!r} {unit} {first_row + i}: lat, lng = {chunk[i, 0]}, {chunk[i, 1]} is outside "
            "[-90, 90] x [-180, 180]: fix that row (is it lng,lat?)"
        )


def _iter_csv(path: Path, chunk_rows: int, what: str) -> Iterator[np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(f)
            first = next(rows, None)
            if first is None:
                raise GalleryFileError(f"{what} file {str(path)!r} is empty: it needs lat,lng rows")
            lat_col, lng_col, width, line = 0, 1, 2, 1
            pending: list[list[str]] = [first]
            if not _is_number(first[0].strip() if first else ""):
                lat_col, lng_col = _columns(first, path, what, first)
                width, pending, line = len(first), [], 2
            emitted = False
            for block in _blocks(pending, rows, chunk_rows):
                yield _parse_block(block, line, lat_col, lng_col, width, path, what, header=line == 2)
                line += len(block)
                emitted = True
            if not emitted:
                raise GalleryFileError(f"{what} file {str(path)!r} has a header but no rows")
    except UnicodeDecodeError as e:
        raise GalleryFileError(
            f"{what} file {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason}): save it as UTF-8 CSV"
        ) from None
    except (OSError, csv.Error) as e:
        raise GalleryFileError(f"{what} file {str(path)!r} cannot be read ({e}): give a readable lat,lng CSV") from None


def _blocks(pending: list[list[str]], rows, chunk_rows: int) -> Iterator[list[list[str]]]:
    """Rows in blocks of ``chunk_rows``. Blank lines at the end of the file (an editor's, a
    spreadsheet's) are dropped; a blank line between rows stays an error that names it."""
    block, blanks = pending, []
    for row in rows:
        if not any(field.strip() for field in row):
            blanks.append(row)
            continue
        for held in (*blanks, row):
            block.append(held)
            if len(block) == chunk_rows:
                yield block
                block = []
        blanks = []
    if block:
        yield block


def _parse_block(block, first_line: int, lat_col: int, lng_col: int, width: int, path: Path, what: str,
                 header: bool) -> np.ndarray:
    out = np.empty((len(block), 2), dtype=np.float64)
    for k, row in enumerate(block):
        line = first_line + k
        if row and len(row) != width:
            raise GalleryFileError(
                f"{what} file {str(path)!r} line {line}: {','.join(row)!r} has {len(row)} fields, "
                f"{'the header has' if header else 'a lat,lng row has'} {width}: fix or delete that line"
            )
        try:
            out[k] = float(row[lat_col]), float(row[lng_col])
        except (ValueError, IndexError):
            raise GalleryFileError(
                f"{what} file {str(path)!r} line {line}: {','.join(row)!r} is not a lat,lng pair of "
                "numbers: fix or delete that line"
            ) from None
    _check_range(out, first_line, path, what, "line")
    return out


def _iter_parquet(path: Path, chunk_rows: int, what: str) -> Iterator[np.ndarray]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        from geoindex.errors import MissingDependencyError

        raise MissingDependencyError("Parquet files need pyarrow: run `pip install pyarrow`") from e
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for files that are not Parquet
        raise GalleryFileError(f"{what} file {str(path)!r} is not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    lat_col, lng_col = _columns(names, path, what, names)
    if pf.metadata.num_rows == 0:
        raise GalleryFileError(f"{what} file {str(path)!r} has no rows")
    row = 1
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=[names[lat_col], names[lng_col]]):
        cols = []
        for i, column in enumerate(batch.columns):
            if column.null_count:
                j = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                raise GalleryFileError(f"{what} file {str(path)!r} row {row + j}: {batch.schema.names[i]} is null: "
                                       "fix or drop that row")
            try:
                cols.append(column.to_numpy(zero_copy_only=False).astype(np.float64))
            except (TypeError, ValueError):
                raise GalleryFileError(f"{what} file {str(path)!r}: column {batch.schema.names[i]!r} is "
                                       f"{column.type}, not numbers: store lat, lng as floats") from None
        chunk = np.stack(cols, axis=1)
        _check_range(chunk, row, path, what, "row")
        yield chunk
        row += len(chunk)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
