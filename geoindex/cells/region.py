"""Regions: countries, bounding boxes and H3 cells, for query filters and regional builds.

One type for both. A query filter keeps the index's cells inside the region; a regional build
(``build_index --country FR``) holds exactly the cells that filter would keep from the global index
of the same resolution: a cell is in a country when its centre lies in that country's admin-0
polygon, or offshore within one cell's radius of it (the ``country`` column,
:mod:`geoindex.cells.countries`), in a box when its centre is, in an H3 cell when that cell is its
ancestor. Kinds combine
with AND, values within a kind with OR.

For a build the region also prunes the enumeration: only the shards (H3 cells 5 resolutions up)
that can hold a region cell are visited, so one country at res 7 never walks the globe's 29M cells.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import h3
import numpy as np

from geoindex.cells.h3ids import cell_to_parent
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
    try:
        cell = h3.str_to_int(value) if isinstance(value, str) else int(value)
        ok = h3.is_valid_cell(h3.int_to_str(cell))
    except (ValueError, TypeError, OverflowError, h3.H3BaseException):
        ok = False
    if not ok:
        raise InvalidQueryError(f"cells filter: {value!r} is not an H3 cell id (e.g. 851fb467fffffff)")
    return cell


def make_filter(countries=(), bboxes=(), cells=()) -> RegionFilter:
    """A region filter from loose values (strings, lists), validated. Kinds AND together, the
    values of a kind OR.

    Args:
        countries: ISO 3166-1 alpha-2 codes (any case), e.g. ``["FR", "es"]``.
        bboxes: boxes as ``"w,s,e,n"`` strings or 4-sequences of degrees (west < east: give two
            boxes for one across the antimeridian).
        cells: H3 cell ids (hex strings or ints) at any resolution up to the index's.

    Returns:
        A frozen, hashable RegionFilter; empty (falsy) when nothing is given.

    Raises:
        InvalidQueryError: a value that is not a country code, a box or an H3 cell; the message
            names it and shows a valid one.
    """
    ccs = []
    for c in countries or ():
        code = str(c).strip().upper()
        if not _CC.match(code):
            raise InvalidQueryError(f"country {c!r} is not an ISO 3166-1 alpha-2 code (e.g. FR, US, JP)")
        ccs.append(code)
    return RegionFilter(tuple(dict.fromkeys(ccs)), tuple(BBox.parse(b) for b in bboxes or ()),
                        tuple(dict.fromkeys(_h3_cell(c) for c in cells or ())))


# -- the manifest's record and its words ------------------------------------------------------------------
def region_to_dict(region: RegionFilter) -> dict:
    return {"countries": list(region.countries), "bboxes": [[b.west, b.south, b.east, b.north] for b in region.bboxes],
            "cells": [h3.int_to_str(c) for c in region.cells]}


def region_from_dict(data: dict | None) -> RegionFilter | None:
    if not data:
        return None
    return make_filter(data.get("countries", ()), data.get("bboxes", ()), data.get("cells", ()))


def describe_region(region: RegionFilter) -> str:
    """``countries FR, BE; bbox -5,41,10,51; cells 831fb4fffffffff``"""
    parts = []
    if region.countries:
        parts.append("countries " + ", ".join(region.countries))
    if region.bboxes:
        parts.append("bbox " + " or ".join(f"{b.west:g},{b.south:g},{b.east:g},{b.north:g}" for b in region.bboxes))
    if region.cells:
        parts.append("cells " + ", ".join(h3.int_to_str(c) for c in region.cells))
    return "; ".join(parts)


# -- membership ------------------------------------------------------------------------------------------
def cells_inside(region: RegionFilter, cell: np.ndarray, lat: np.ndarray, lng: np.ndarray,
                 country: np.ndarray | None = None) -> np.ndarray:
    """(n,) bool: which cells (int64 ids, centres in degrees) lie in ``region``. ``country``: their
    ``country`` column (object array), needed when the region names countries."""
    keep = np.ones(len(cell), dtype=bool)
    if region.countries:
        keep &= np.isin(np.asarray(country, dtype=object), list(region.countries))
    if region.bboxes:
        keep &= _in_boxes(region, lat, lng)
    if region.cells:
        inside = np.zeros(len(cell), dtype=bool)
        for r, ancestors in cells_by_res(region).items():
            inside |= np.isin(cell_to_parent(np.asarray(cell, dtype=np.int64), r), ancestors)
        keep &= inside
    return keep


def points_inside(region: RegionFilter, lat, lng) -> np.ndarray:
    """(n,) bool: which points (degrees) lie in ``region``, by the rule its cells follow (a point
    is in the country whose polygon holds it, or within ``POINT_SNAP_KM`` offshore): each point
    is taken as its cell at the finest resolution the region names."""
    from geoindex.cells.countries import point_countries

    lat, lng = np.atleast_1d(np.asarray(lat, dtype=np.float64)), np.atleast_1d(np.asarray(lng, dtype=np.float64))
    country = point_countries(lat, lng) if region.countries else None
    res = max(cells_by_res(region), default=0)
    own = np.array([h3.str_to_int(h3.latlng_to_cell(a, b, res)) for a, b in zip(lat, lng)], dtype=np.int64)
    return cells_inside(region, own, lat, lng, country)


def _in_boxes(region: RegionFilter, lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    inside = np.zeros(len(lat), dtype=bool)
    for b in region.bboxes:
        inside |= (lat >= b.south) & (lat <= b.north) & (lng >= b.west) & (lng <= b.east)
    return inside


def cells_by_res(region: RegionFilter) -> dict[int, np.ndarray]:
    """The region's cells grouped by H3 resolution: {resolution: (m,) int64 ids}."""
    out: dict[int, list[int]] = {}
    for c in region.cells:
        out.setdefault(h3.get_resolution(h3.int_to_str(c)), []).append(c)
    return {r: np.array(cs, dtype=np.int64) for r, cs in out.items()}


def finer_cell(region: RegionFilter, resolution: int) -> tuple[str, int] | None:
    """The first of the region's cells finer than ``resolution`` (hex id, its resolution), else None:
    such a cell cannot select cells at ``resolution``."""
    for c in region.cells:
        r = h3.get_resolution(h3.int_to_str(c))
        if r > resolution:
            return h3.int_to_str(c), r
    return None


# -- a build's shards ------------------------------------------------------------------------------------
def check_build_region(region: RegionFilter, resolution: int) -> None:
    """Refuse what cannot select cells at ``resolution``: finer cells, unknown countries."""
    from geoindex.cells.countries import known_codes

    if too_fine := finer_cell(region, resolution):
        cell, r = too_fine
        raise InvalidQueryError(f"--cells {cell} is resolution {r}, finer than the gallery's "
                                f"{resolution}: give cells at resolution <= {resolution}")
    known = known_codes()
    for cc in region.countries:
        if cc not in known:
            raise InvalidQueryError(f"--country {cc!r} has no land in the admin-0 boundaries: give an ISO 3166-1 "
                                    "alpha-2 code of a country with land (e.g. FR, US, JP; AQ for Antarctica)")


def shard_roots_in(region: RegionFilter, roots: list[int], resolution: int) -> list[int]:
    """The shard roots (sorted ids at one resolution) that may hold a cell of ``region`` at
    ``resolution``: a superset, never missing one (tested against the full enumeration)."""
    keep = np.ones(len(roots), dtype=bool)
    arr = np.asarray(roots, dtype=np.int64)
    if not len(arr):
        return []
    root_res = h3.get_resolution(h3.int_to_str(int(arr[0])))
    if region.cells:
        near = np.zeros(len(arr), dtype=bool)
        for r, ancestors in cells_by_res(region).items():
            if r <= root_res:  # a region cell as coarse as a shard: the shards below it
                near |= np.isin(cell_to_parent(arr, r), ancestors)
            else:  # finer: the shard holding it
                near |= np.isin(arr, cell_to_parent(ancestors, root_res))
        keep &= near
    if region.bboxes:
        keep &= np.isin(arr, _roots_near_boxes(region, root_res))
    if region.countries:
        keep &= _roots_near_countries(region, arr, resolution)
    return [int(r) for r in arr[keep]]


def _roots_near_boxes(region: RegionFilter, root_res: int) -> np.ndarray:
    """Cells at ``root_res`` overlapping a box, and their neighbours: a descendant strays a little
    outside its ancestor's hexagon, never past the ring around it."""
    found: set[str] = set()
    for b in region.bboxes:
        shape = h3.LatLngPoly([(b.south, b.west), (b.south, b.east), (b.north, b.east), (b.north, b.west)])
        for c in h3.h3shape_to_cells_experimental(shape, root_res, contain="overlap"):
            found.update(h3.grid_disk(c, 1))
    return np.array(sorted(h3.str_to_int(c) for c in found), dtype=np.int64)


def _roots_near_countries(region: RegionFilter, roots: np.ndarray, resolution: int) -> np.ndarray:
    """A cell is in a country when its centre lies in one of the country's polygon parts or within
    one cell's radius of it. A shard (centre c, every descendant's centre within rho of c) can hold
    one only when c lies in such a part, or a point of the part's boundary is within rho + that
    radius of c (on the segment from c to a descendant's centre inside the part, the boundary is
    crossed). Boundary points are at most BOUNDARY_STEP_KM apart: half of that is added."""
    from geoindex.cells.countries import (BOUNDARY_STEP_KM, cell_radius_km, chord_to_km, country_edges,
                                          latlng_to_xyz, point_countries)

    centres = np.array([h3.cell_to_latlng(h3.int_to_str(int(r))) for r in roots])
    inside = np.isin(point_countries(centres[:, 0], centres[:, 1], 0.0).astype(str), list(region.countries))
    edges = country_edges(region.countries)
    if edges is None:
        return inside
    xyz = latlng_to_xyz(centres[:, 0], centres[:, 1])
    rho = np.empty(len(roots))
    for i, r in enumerate(roots):
        vertices = np.array(h3.cell_to_boundary(h3.int_to_str(int(r))))
        rho[i] = np.linalg.norm(latlng_to_xyz(vertices[:, 0], vertices[:, 1]) - xyz[i], axis=1).max()
    rho_km = chord_to_km(rho * 1.5)  # descendants' centres stray past the hexagon by well under half its radius
    d, _ = edges.query(xyz, k=1)
    return inside | (chord_to_km(d) <= rho_km + cell_radius_km(resolution) + BOUNDARY_STEP_KM)
