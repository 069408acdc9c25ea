"""World boundaries for maps: TopoJSON decoded into rings of lng, lat degrees.

``countries-50m.json`` comes from the npm package ``world-atlas`` (Natural Earth 1:50m, public
domain), installed from ``web/package-lock.json`` and copied into ``geoindex/maps/basemap/`` by
``web/build.mjs`` (``make install`` runs it; wheels carry it).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoindex.errors import MissingDependencyError

BASEMAP = Path(__file__).parent / "basemap" / "countries-50m.json"


@dataclass(frozen=True)
class Country:
    name: str
    rings: list[np.ndarray]  # (m, 2) float64 lng, lat, continuous (lng may pass +-180); outer and holes alike


def basemap_path() -> Path:
    if not BASEMAP.is_file():
        raise MissingDependencyError(
            f"the basemap {BASEMAP} is missing: it is built from the npm lock file; run "
            "`cd web && npm ci && npm run build` (make install does it)"
        )
    return BASEMAP


@functools.cache
def countries(path: str | None = None) -> tuple[Country, ...]:
    """Every country of the TopoJSON ``countries`` object, decoded once per process."""
    topology = json.loads(Path(path or basemap_path()).read_text())
    arcs = decode_arcs(topology)
    out = []
    for geometry in topology["objects"]["countries"]["geometries"]:
        polygons = {"Polygon": [geometry.get("arcs", [])], "MultiPolygon": geometry.get("arcs", [])}.get(
            geometry.get("type"), [])
        rings = [ring_of(arcs, ring) for polygon in polygons for ring in polygon]
        out.append(Country(geometry.get("properties", {}).get("name", ""), rings))
    return tuple(out)


def decode_arcs(topology: dict) -> list[np.ndarray]:
    """TopoJSON arcs -> (m, 2) lng, lat arrays (quantized arcs are delta-encoded, then scaled)."""
    transform = topology.get("transform")
    decoded = []
    for arc in topology["arcs"]:
        points = np.asarray(arc, dtype=np.float64).reshape(-1, 2)
        if transform:
            points = np.cumsum(points, axis=0) * transform["scale"] + transform["translate"]
        decoded.append(points)
    return decoded


def ring_of(arcs: list[np.ndarray], indices: list[int]) -> np.ndarray:
    """A ring from arc indices: ``~i`` (that is, -i - 1) is arc i reversed; each arc after the first
    starts where the previous ended, so its first point is dropped."""
    parts = []
    for k, i in enumerate(indices):
        arc = arcs[i] if i >= 0 else arcs[~i][::-1]
        parts.append(arc if k == 0 else arc[1:])
    ring = np.concatenate(parts) if parts else np.empty((0, 2))
    if len(ring):  # a ring across the antimeridian (Russia, Fiji) runs on past +-180, not back across the map
        ring[:, 0] = np.degrees(np.unwrap(np.radians(ring[:, 0])))
    return ring
