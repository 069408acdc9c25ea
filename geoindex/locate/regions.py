"""Region filters: countries, bounding boxes, H3 cells at any coarser resolution.

A filter is a typed object; :func:`region_ids` turns it into a SQL predicate that runs in DuckDB
over ``cells`` and returns the matching cell ids, which the search turns into a FAISS ID selector.
Kinds combine with AND; values within a kind combine with OR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoindex.cells.h3ids import parent_masks
from geoindex.errors import InvalidQueryError

_CC = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class BBox:
    """west, south, east, north in degrees (GeoJSON order)."""

    west: float
    south: float
    east: float
    north: float

    @classmethod
    def parse(cls, value) -> BBox:
        """From ``"w,s,e,n"`` or a 4-sequence; InvalidQueryError names what is wrong."""
        parts = value.split(",") if isinstance(value, str) else list(value)
        try:
            w, s, e, n = (float(p) for p in parts)
        except (TypeError, ValueError):
            raise InvalidQueryError(
                f"bbox {value!r} is not four numbers west,south,east,north (e.g. -5.2,41.3,9.6,51.1)"
            ) from None
        if not all(np.isfinite([w, s, e, n])) or not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= 90 and -90 <= n <= 90):
            raise InvalidQueryError(f"bbox {value!r} is outside [-180, 180] x [-90, 90]: give west,south,east,north degrees")
        if s >= n:
            raise InvalidQueryError(f"bbox {value!r} is inverted: south {s} >= north {n}; the order is west,south,east,north")
        if w >= e:
            raise InvalidQueryError(
                f"bbox {value!r} has west {w} >= east {e}: the order is west,south,east,north; "
                "for a box across the antimeridian give two boxes, one each side"
            )
        return cls(w, s, e, n)


@dataclass(frozen=True)
class RegionFilter:
    countries: tuple[str, ...] = ()
    bboxes: tuple[BBox, ...] = ()
    cells: tuple[int, ...] = ()  # H3 ids at any resolution <= the index's

    def __bool__(self) -> bool:
        return bool(self.countries or self.bboxes or self.cells)


def _h3_cell(value) -> int:
    import h3

    try:
        cell = h3.str_to_int(value) if isinstance(value, str) else int(value)
        ok = h3.is_valid_cell(h3.int_to_str(cell))
    except (ValueError, TypeError, OverflowError, h3.H3BaseException):
        ok = False
    if not ok:
        raise InvalidQueryError(f"cells filter: {value!r} is not an H3 cell id (e.g. 851fb467fffffff)")
    return cell


def make_filter(countries=(), bboxes=(), cells=()) -> RegionFilter:
    """Validate loose values (strings, lists) into a RegionFilter."""
    ccs = []
    for c in countries or ():
        code = str(c).strip().upper()
        if not _CC.match(code):
            raise InvalidQueryError(f"country {c!r} is not an ISO 3166-1 alpha-2 code (e.g. FR, US, JP)")
        ccs.append(code)
    return RegionFilter(tuple(dict.fromkeys(ccs)), tuple(BBox.parse(b) for b in bboxes or ()),
                        tuple(dict.fromkeys(_h3_cell(c) for c in cells or ())))


def _parent_sql(res: int) -> str:
    """SQL expression: the parent of ``cell`` at ``res`` (the bit arithmetic of h3ids)."""
    keep, bits = parent_masks(res)
    return f"((cell & {keep}) | {bits})"


def region_ids(db_path: Path, region: RegionFilter, index_res: int | None, known_countries: set[str]) -> np.ndarray:
    """Sorted int64 ids of the cells inside ``region`` (DuckDB does the filtering)."""
    import duckdb
    import h3

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
        by_res: dict[int, list[int]] = {}
        for cell in region.cells:
            r = h3.get_resolution(h3.int_to_str(cell))
            if r > index_res:
                raise InvalidQueryError(
                    f"cells filter: {h3.int_to_str(cell)} is resolution {r}, finer than the index's {index_res}: "
                    f"give cells at resolution <= {index_res}"
                )
            by_res.setdefault(r, []).append(cell)
        parts = [f"{_parent_sql(r)} IN ({', '.join(str(c) for c in cs)})" for r, cs in sorted(by_res.items())]
        clauses.append("(" + " OR ".join(parts) + ")")
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        ids = con.execute(f"SELECT cell FROM cells WHERE {' AND '.join(clauses)} ORDER BY cell", params).fetchnumpy()["cell"]
    finally:
        con.close()
    return np.asarray(ids, dtype=np.int64)
