"""The hot path's view of ``cells``: the columns a query reads, as numpy arrays.

A single-row DuckDB lookup costs milliseconds; a ``searchsorted`` on the sorted id column costs
microseconds. Strings are dictionary-encoded in SQL (codes + one small list of distinct values),
so 4M cells do not become 12M Python strings.

The build writes these columns once as ``DIR/hot/*.npy`` (plus ``values.json``, the distinct
strings; :mod:`geoindex.store.hot_writer`, from the shards) and readers memory-map them: opening a res-7 index (29M cells, 1 GB of columns) reads
none of it, and a query touches a few pages (a binary search on the ids, then its rows). An index
without ``hot/`` (built before it existed) loads the columns from DuckDB as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoindex.errors import IndexDirError

STRING_COLUMNS = ("country", "admin1", "place")


@dataclass
class CellTable:
    """Sorted ``cell`` ids with aligned columns. ``codes[c]`` (n,) int32 index into ``values[c]``
    (object array; code 0 is None)."""

    cell: np.ndarray  # (n,) int64, sorted
    lat: np.ndarray  # (n,) float64
    lng: np.ndarray
    codes: dict[str, np.ndarray]
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.cell)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of ``ids`` (any shape, int64); -1 where an id is absent (FAISS's -1 too)."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.cell, ids)
        pos = np.clip(pos, 0, len(self.cell) - 1)
        return np.where(self.cell[pos] == ids, pos, -1)

    def text(self, column: str, rows: np.ndarray) -> np.ndarray:
        return self.values[column][self.codes[column][rows]]


HOT = "hot"
_NUMERIC = ("cell", "lat", "lng")


def hot_files() -> tuple[str, ...]:
    """The hot column files of an index directory, relative to it (written by
    :func:`geoindex.store.hot_writer.write_hot_columns_streaming`)."""
    return (*(f"{HOT}/{c}.npy" for c in (*_NUMERIC, *STRING_COLUMNS)), f"{HOT}/values.json")


def load_cell_table(db_path: Path) -> CellTable:
    """The cell table of the index whose DuckDB file is ``db_path``: its hot columns memory-mapped
    when the build wrote them, else loaded from DuckDB."""
    hot = db_path.parent / HOT
    if not (hot / "values.json").is_file():
        return _read_duckdb(db_path)
    try:
        values = json.loads((hot / "values.json").read_text())
        # plain ndarray views of the maps (the map stays open through .base): np.memmap's Python
        # __getitem__ cost ~4 us a scalar read, ~50 of them a query (measured in bench_query)
        columns = {c: np.load(hot / f"{c}.npy", mmap_mode="r").view(np.ndarray) for c in (*_NUMERIC, *STRING_COLUMNS)}
    except (OSError, ValueError) as e:
        from geoindex.store.manifest import unreadable

        why = unreadable(e) if isinstance(e, OSError) else f"holds unreadable columns ({e})"
        raise IndexDirError(f"{getattr(e, 'filename', None) or hot} {why}: if the file is damaged, rebuild the "
                            f"index (`geoindex build ... --out {db_path.parent} --overwrite`)") from e
    return CellTable(columns["cell"], columns["lat"], columns["lng"],
                     {c: columns[c] for c in STRING_COLUMNS},
                     {c: np.array(values[c], dtype=object) for c in STRING_COLUMNS})


def duckdb_error(db_path: Path, e: Exception) -> str:
    """One line for a DuckDB file that does not open: permissions, or a damaged file."""
    import os

    if not os.access(db_path, os.R_OK):
        return (f"{db_path} cannot be read (permission denied): give this user read access (chmod a+r) "
                "or run as its owner")
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return (f"{db_path} is not a readable DuckDB file (DuckDB says: {first}): the file is damaged; rebuild the "
            f"index (`geoindex build ... --out {db_path.parent} --overwrite`, with the options it was built with)")


def _read_duckdb(db_path: Path) -> CellTable:
    import duckdb

    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except (duckdb.Error, OSError) as e:
        raise IndexDirError(duckdb_error(db_path, e)) from e
    try:
        base = con.execute("SELECT cell, lat, lng FROM cells ORDER BY cell").fetchnumpy()
        codes, values = {}, {}
        for col in STRING_COLUMNS:
            distinct = [r[0] for r in con.execute(
                f"SELECT DISTINCT {col} FROM cells WHERE {col} IS NOT NULL ORDER BY {col}").fetchall()]
            values[col] = np.array([None, *distinct], dtype=object)
            code_sql = f"""
                WITH d AS (SELECT {col} AS v, row_number() OVER (ORDER BY {col}) AS code
                           FROM (SELECT DISTINCT {col} FROM cells WHERE {col} IS NOT NULL))
                SELECT coalesce(d.code, 0)::INTEGER AS code FROM cells LEFT JOIN d ON cells.{col} = d.v
                ORDER BY cells.cell"""
            codes[col] = np.asarray(con.execute(code_sql).fetchnumpy()["code"], dtype=np.int32)
    finally:
        con.close()
    return CellTable(np.asarray(base["cell"], dtype=np.int64), np.asarray(base["lat"], dtype=np.float64),
                     np.asarray(base["lng"], dtype=np.float64), codes, values)
