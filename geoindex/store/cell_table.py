"""The hot path's view of ``cells``: columns loaded once from DuckDB into numpy.

A single-row DuckDB lookup costs milliseconds; a ``searchsorted`` on the sorted id column costs
microseconds. Strings are dictionary-encoded in SQL (codes + one small list of distinct values),
so 4M cells do not become 12M Python strings.
"""

from __future__ import annotations

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


def load_cell_table(db_path: Path) -> CellTable:
    import duckdb

    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as e:
        raise IndexDirError(f"{db_path} is not a readable DuckDB file ({e}): rebuild the index") from e
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
