"""Results as GeoJSON: confidence regions (MultiPolygons of H3 cells) and prediction points.

Cell outlines follow RFC 7946: longitudes within [-180, 180], a polygon that crosses the
antimeridian is split there into one part each side (section 3.1.9), and exterior rings run
counter-clockwise. A cell that holds a pole is closed over the pole, so the pole is inside it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import h3
import numpy as np

if TYPE_CHECKING:
    from geoindex.locate.options import LocateResult


def confidence_region(cells: np.ndarray, mass: np.ndarray, confidence: float) -> dict:
    """GeoJSON Feature: the smallest set of cells (by descending mass) holding ``confidence``."""
    cum = np.cumsum(mass)
    n = int(min(len(cells), np.searchsorted(cum, confidence - 1e-12) + 1))
    hexes = [h3.int_to_str(int(c)) for c in cells[:n]]
    geometry = cells_to_geometry(hexes)
    return {
        "type": "Feature",
        "geometry": geometry,
        "properties": {"kind": "confidence_region", "confidence": confidence,
                       "mass": float(cum[n - 1]), "cells": hexes},
    }


def results_to_geojson(results: list[LocateResult], labels: list[str] | None = None) -> dict:
    """All the answers as one GeoJSON FeatureCollection (RFC 7946).

    Args:
        results: answers from ``Geolocator.locate``, one per query.
        labels: a label per query (e.g. its file name) for the ``query`` property; default the
            query's index in ``results``.

    Returns:
        A FeatureCollection dict: a Point per prediction ([lng, lat] degrees; properties: query,
        rank, cell, probability, score, country, admin1, place, place_km, cell_h3, and the answer's
        radius_km, radius_confidence and warnings) and, where asked for, each query's confidence region (a
        MultiPolygon Feature).
    """
    features = []
    for q, res in enumerate(results):
        label = labels[q] if labels else q
        for rank, p in enumerate(res.predictions, 1):
            props = {k: v for k, v in p.to_dict().items() if k not in ("lat", "lng")}
            props.update(query=label, rank=rank, radius_km=res.radius_km, radius_confidence=res.radius_confidence,
                         warnings=res.warnings)
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [p.lng, p.lat]},
                             "properties": props})
        if res.confidence_region is not None:
            region = dict(res.confidence_region)
            region["properties"] = {**region["properties"], "query": label}
            features.append(region)
    return {"type": "FeatureCollection", "features": features}


def cells_to_geometry(hexes: list[str]) -> dict:
    """GeoJSON (Multi)Polygon of the union of H3 cells (hex ids). h3's own union where no cell
    crosses the antimeridian or holds a pole; else each cell is unwrapped, cut at +-180 and the
    parts merged with shapely."""
    if not any(_crosses_antimeridian(h) or _pole_of(h) is not None for h in hexes):
        return h3.cells_to_geo(hexes)
    from shapely.geometry import box, mapping
    from shapely.geometry.polygon import orient
    from shapely.ops import unary_union

    world = box(-180, -90, 180, 90)
    parts = []
    for h in hexes:
        cell = _unwrapped_cell(h)
        for shift in (-360, 0, 360):  # the part of the unwrapped cell that lies in each copy of the world
            piece = world.intersection(_translate(cell, shift))
            if not piece.is_empty:
                parts.append(piece)
    merged = unary_union(parts)
    polygons = [orient(p, 1.0) for p in getattr(merged, "geoms", [merged]) if p.geom_type == "Polygon" and p.area > 0]
    return mapping(polygons[0]) if len(polygons) == 1 else {
        "type": "MultiPolygon", "coordinates": [mapping(p)["coordinates"] for p in polygons]}


def _crosses_antimeridian(h: str) -> bool:
    lngs = [lng for _, lng in h3.cell_to_boundary(h)]
    return max(lngs) - min(lngs) > 180


def _pole_of(h: str) -> float | None:
    """90.0 or -90.0 when the cell holds that pole, else None."""
    return _pole_cells(h3.get_resolution(h)).get(h)


@functools.lru_cache(maxsize=16)
def _pole_cells(res: int) -> dict[str, float]:
    return {h3.latlng_to_cell(pole, 0.0, res): pole for pole in (90.0, -90.0)}


def _unwrapped_cell(h: str):
    """The cell as a planar lng/lat shapely Polygon with continuous longitudes (which may pass
    +-180); a polar cell is closed along its pole's latitude, spanning 360 degrees."""
    from shapely.geometry import Polygon

    ring = [(lng, lat) for lat, lng in h3.cell_to_boundary(h)]
    unwrapped = [ring[0]]
    for lng, lat in ring[1:]:
        prev = unwrapped[-1][0]
        lng += 360 * round((prev - lng) / 360)  # the copy of lng nearest the previous vertex
        unwrapped.append((lng, lat))
    pole = _pole_of(h)
    if pole is None:
        return Polygon(unwrapped)
    first_lng, first_lat = unwrapped[0]
    end = first_lng + (360 if unwrapped[-1][0] > first_lng else -360)  # once around the pole
    return Polygon([*unwrapped, (end, first_lat), (end, pole), (first_lng, pole)])


def _translate(geom, dx: float):
    from shapely import affinity

    return affinity.translate(geom, xoff=dx)
