"""The results file, assembled from the committed parts: Parquet, CSV, JSON Lines or GeoJSON.

The format follows the suffix of ``--out``. Assembly streams one part at a time (memory stays flat
however many photos there are), keeps the first row of any path seen twice, and writes under a
temporary name renamed into place: the results file is always a whole table, old or new.

An existing ``--out`` is replaced only when it is this command's own results (its parts folder
beside it holds the run's settings, or a Parquet file carries :data:`PROVENANCE` in its schema
metadata), or with ``--overwrite``: never the user's own table (:func:`check_ours`).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from geoindex.archive.parts import parts_dir_of, write_atomically
from geoindex.errors import ResultsFileError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".geojson": "geojson"}


def format_of(out: Path) -> str:
    """The output format named by ``out``'s suffix; ResultsFileError names the choices."""
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ResultsFileError(f"--out {str(out)!r}: the suffix says the format; use .parquet, .csv, .jsonl "
                               "or .geojson")
    return fmt


def check_writable(out: Path) -> None:
    """Fail now, before any work, when ``out`` cannot be written (no folder, a folder, read-only)."""
    parent = out.parent
    if out.is_dir():
        raise ResultsFileError(f"--out {str(out)!r} is a folder: give a file name such as {str(out / 'results.parquet')!r}")
    format_of(out)
    if not parent.is_dir():
        raise ResultsFileError(f"--out {str(out)!r}: folder {str(parent)!r} does not exist: create it first")
    probe = parent / f".{out.name}.probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ResultsFileError(f"--out {str(out)!r} cannot be written ({e.strerror or e}): choose a folder you "
                               "can write to") from e
    if out.exists() and not os.access(out, os.W_OK):
        raise ResultsFileError(f"--out {str(out)!r} is read-only: make it writable or choose another name")


PROVENANCE = b"geoindex.archive"  # the Parquet schema metadata key of a results table this command wrote


def is_ours(out: Path) -> bool:
    """Whether the existing file ``out`` is a results table this command wrote: its parts folder
    holds the run's settings, or (Parquet, the folder deleted) its schema carries PROVENANCE."""
    if (parts_dir_of(out) / "settings.json").is_file():
        return True
    if FORMATS.get(out.suffix.lower()) == "parquet":
        try:
            return PROVENANCE in (pq.read_schema(out).metadata or {})
        except (OSError, pa.ArrowException):
            return False
    return False


def check_ours(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``out`` that is not this command's results table, unless ``overwrite``."""
    if out.exists() and not overwrite and not is_ours(out):
        raise ResultsFileError(f"--out {str(out)!r} exists and is not a results table geoindex wrote (no "
                               f"{parts_dir_of(out).name}/ beside it): give another --out, or add --overwrite to "
                               "replace it")


def _unique_tables(parts: list[Path], schema: pa.Schema) -> Iterator[pa.Table]:
    """Each part's table without rows whose path came earlier, as ``schema``."""
    seen: set[str] = set()
    for part in parts:
        table = pq.read_table(part).cast(schema)
        paths = table.column("path").to_pylist()
        keep = [p not in seen for p in paths]
        seen.update(paths)
        yield table if all(keep) else table.filter(pa.array(keep))


def _plain(value):
    """A row value as JSON: datetimes as ISO 8601 text."""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _json_row(row: dict) -> dict:
    return {k: _plain(v) for k, v in row.items()}


def _write_parquet(tables, schema, tmp: Path) -> int:
    n = 0
    schema = schema.with_metadata({**(schema.metadata or {}), PROVENANCE: b"1"})
    with pq.ParquetWriter(tmp, schema) as writer:
        for table in tables:
            writer.write_table(table)
            n += table.num_rows
    return n


def _write_csv(tables, schema, tmp: Path) -> int:
    n = 0
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=schema.names)
        writer.writeheader()
        for table in tables:
            for row in table.to_pylist():
                top = row.get("top_k")
                row["top_k"] = "" if top is None else json.dumps(top, ensure_ascii=False)
                writer.writerow({k: "" if v is None else _plain(v) for k, v in row.items()})
                n += 1
    return n


def _write_jsonl(tables, schema, tmp: Path) -> int:
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for table in tables:
            for row in table.to_pylist():
                f.write(json.dumps(_json_row(row), ensure_ascii=False) + "\n")
                n += 1
    return n


def _write_geojson(tables, schema, tmp: Path) -> int:
    """A FeatureCollection: one Point per photo at (lng, lat); null geometry for a row with an error."""
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        f.write('{"type": "FeatureCollection", "features": [\n')
        for table in tables:
            for row in table.to_pylist():
                located = row["lat"] is not None and row["lng"] is not None
                feature = {"type": "Feature",
                           "geometry": {"type": "Point", "coordinates": [row["lng"], row["lat"]]} if located else None,
                           "properties": _json_row(row)}
                f.write((",\n" if n else "") + json.dumps(feature, ensure_ascii=False))
                n += 1
        f.write("\n]}\n")
    return n


WRITERS = {"parquet": _write_parquet, "csv": _write_csv, "jsonl": _write_jsonl, "geojson": _write_geojson}


def assemble(parts: list[Path], out: Path, schema: pa.Schema) -> int:
    """Write every committed row, once per path, to ``out`` (format by suffix); returns the rows."""
    write = WRITERS[format_of(out)]
    count = {}
    write_atomically(out, lambda tmp: count.setdefault("n", write(_unique_tables(parts, schema), schema, tmp)))
    return count["n"]
