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


def region_ids(db_path: Path, region: RegionFilter, index_res: int | None, known_countries: set[str]) -> np.ndarray:
    """Sorted int64 ids of the cells inside ``region`` (DuckDB does the filtering)."""
    import duckdb

    clauses, params = [], []
    if region.countries:
        unknown = [c for c in region.countries if c not in known_countries]
        if unknown:
            sample = ", ".join(sorted(known_countries)[:8])
            raise InvalidQueryError(
                f"country {unknown[0]!r} has no cells in this index: give an ISO 3166-1 alpha-2 code "
                f"that it covers (e.g. {sample}, ...)"
            )
        clauses.append(f"country IN ({', '.join('?' for _ in region.countries)})")
        params += list(region.countries)
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
