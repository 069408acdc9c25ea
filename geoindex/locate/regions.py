"""Region filters: countries, bounding boxes, H3 cells at any coarser resolution.

A filter is a typed object (:class:`geoindex.cells.region.RegionFilter`, which also says which
cells a regional build holds); :func:`region_ids` turns it into a SQL predicate that runs in DuckDB
over ``cells`` and returns the matching cell ids, which the search turns into a FAISS ID selector.
Kinds combine with AND; values within a kind combine with OR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geoindex.cells.h3ids import parent_masks
from geoindex.cells.region import (  # noqa: F401 (BBox, RegionFilter, make_filter: the query layer's names)
    BBox,
    RegionFilter,
    cells_by_res,
    finer_cell,
    make_filter,
)
from geoindex.errors import InvalidQueryError


def _parent_sql(res: int) -> str:
    """SQL expression: the parent of ``cell`` at ``res`` (the bit arithmetic of h3ids)."""
    keep, bits = parent_masks(res)
    return f"((cell & {keep}) | {bits})"


def empty_countries(region: RegionFilter, known_countries: set[str]) -> list[str]:
    """The filter's countries that have no cells in the index (answers come from the others)."""
    return [c for c in region.countries if c not in known_countries]


def empty_countries_note(region: RegionFilter, known_countries: set[str]) -> str | None:
    """The sentence an answer carries when some of its filter's countries have no cells here."""
    empty = empty_countries(region, known_countries)
    if not empty or len(empty) == len(region.countries):
        return None
    return (f"country filter: {', '.join(empty)} {'has' if len(empty) == 1 else 'have'} no cells in this index; "
            f"answers come from {', '.join(c for c in region.countries if c not in empty)}")


def region_ids(db_path: Path, region: RegionFilter, index_res: int | None, known_countries: set[str]) -> np.ndarray:
    """Sorted int64 ids of the cells inside ``region`` (DuckDB does the filtering). Countries with
    no cells here are left out (:func:`empty_countries_note` says so); all of them empty is an error."""
    import duckdb

    clauses, params = [], []
    if region.countries:
        empty = empty_countries(region, known_countries)
        if len(empty) == len(region.countries):
            sample = ", ".join(sorted(known_countries)[:8])
            raise InvalidQueryError(
                f"country {' and '.join(repr(c) for c in empty)} {'has' if len(empty) == 1 else 'have'} no cells "
                f"in this index: give an ISO 3166-1 alpha-2 code that it covers (e.g. {sample}, ...)"
            )
        present = [c for c in region.countries if c not in empty]
        clauses.append(f"country IN ({', '.join('?' for _ in present)})")
        params += present
    if region.bboxes:
        boxes = []
        for b in region.bboxes:
            boxes.append("(lat BETWEEN ? AND ? AND lng BETWEEN ? AND ?)")
            params += [b.south, b.north, b.west, b.east]
        clauses.append("(" + " OR ".join(boxes) + ")")
    if region.cells:
        if index_res is None:
            raise InvalidQueryError("cells filters need an H3 index; this index holds CSV rows: use --country or --bbox")
        if too_fine := finer_cell(region, index_res):
            cell, r = too_fine
            raise InvalidQueryError(
                f"cells filter: {cell} is resolution {r}, finer than the index's {index_res}: "
                f"give cells at resolution <= {index_res}"
            )
        parts = [f"{_parent_sql(r)} IN ({', '.join(str(c) for c in cs)})"
                 for r, cs in sorted(cells_by_res(region).items())]
        clauses.append("(" + " OR ".join(parts) + ")")
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        ids = con.execute(f"SELECT cell FROM cells WHERE {' AND '.join(clauses)} ORDER BY cell", params).fetchnumpy()["cell"]
    finally:
        con.close()
    return np.asarray(ids, dtype=np.int64)
