"""Results as GeoJSON: confidence regions (MultiPolygons of H3 cells) and prediction points."""

from __future__ import annotations

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
    geometry = h3.cells_to_geo(hexes)
    return {
        "type": "Feature",
        "geometry": geometry,
        "properties": {"kind": "confidence_region", "confidence": confidence,
                       "mass": float(cum[n - 1]), "cells": hexes},
    }


def results_to_geojson(results: list[LocateResult], labels: list[str] | None = None) -> dict:
    """One FeatureCollection: a Point per prediction (properties: query, rank, metadata) and the
    confidence regions, when asked for."""
    features = []
    for q, res in enumerate(results):
        label = labels[q] if labels else q
        for rank, p in enumerate(res.predictions, 1):
            props = {k: v for k, v in p.to_dict().items() if k not in ("lat", "lng")}
            props.update(query=label, rank=rank)
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [p.lng, p.lat]},
                             "properties": props})
        if res.confidence_region is not None:
            region = dict(res.confidence_region)
            region["properties"] = {**region["properties"], "query": label}
            features.append(region)
    return {"type": "FeatureCollection", "features": features}
