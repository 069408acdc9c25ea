"""Countries by point-in-polygon, and the names inside them: the labels of every point geoindex shows.

Boundaries: Natural Earth 1:10m admin-0 countries as the npm package ``world-atlas`` ships them
(``countries-10m.json``, public domain), installed from ``web/package-lock.json`` and copied into
``geoindex/maps/basemap/`` by ``web/build.mjs`` (``make install`` runs it; wheels carry it).

The rule (label version :data:`LABEL_VERSION`):

- **country**: the polygon part a point lies in. A point in no polygon (offshore) takes the part
  whose boundary is nearest, if it is within ``snap_km`` (one cell's radius for a cell centre,
  :data:`POINT_SNAP_KM` for a loose point), else none (open ocean).
- a part's code: the ISO 3166-1 alpha-2 code that most GeoNames places inside that part carry, else
  the polygon's own (its ISO numeric id, via ``pycountry``). So overseas parts of one polygon get
  their own codes (French Guiana GF, Reunion RE, Svalbard SJ inside Norway's polygon), and
  territories without an ISO id in world-atlas take their places' codes (Kosovo XK, N. Cyprus CY,
  Somaliland SO, Baikonur KZ); a part with neither takes the code of the GeoNames place nearest its
  centre (Svalbard's smaller islands: SJ). Antarctica is AQ; its ring is closed over the pole.
- **admin1** and **place**: the nearest GeoNames place (cities1000) whose country is the point's,
  with ``place_km``, the great-circle km to it. A country without places (AQ) has none; a point at
  sea keeps its nearest place of any country for orientation, with no country or admin1.

world-atlas writes antimeridian points as -180 on both sides; each ring is moved to the side its
other points lie on (Russia's Chukotka, Fiji), and rings run in plain lng, lat (planar tests are
right because Natural Earth cuts every polygon at +-180).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoindex.errors import MissingDependencyError

LABEL_VERSION = 2  # 1: country of the nearest place (before polygons)
POINT_SNAP_KM = 5.0  # a loose point (photo, refined point) this far off the 1:10m coastline is still on it
BOUNDARY_STEP_KM = 2.0  # boundaries are densified to this spacing for the nearest-boundary search
EARTH_RADIUS_KM = 6371.0088
BOUNDARIES = Path(__file__).resolve().parent.parent / "maps" / "basemap" / "countries-10m.json"
_UNSPLIT = {"N. Cyprus": "CY", "Kosovo": "XK", "Somaliland": "SO"}  # documented fallbacks when no place votes


@dataclass(frozen=True)
class Boundaries:
    parts: np.ndarray  # (p,) shapely Polygons, lng/lat degrees
    code: np.ndarray  # (p,) object str ISO alpha-2 (None: unknown)
    name: np.ndarray  # (p,) object str, world-atlas's name of the polygon the part belongs to
    tree: object  # shapely STRtree over parts
    edge_xyz_tree: object  # scipy cKDTree over densified boundary points (unit vectors)
    edge_part: np.ndarray  # (b,) int32 part of each boundary point


def boundaries_path() -> Path:
    if not BOUNDARIES.is_file():
        raise MissingDependencyError(
            f"the country boundaries {BOUNDARIES} are missing: they are built from the npm lock file; run "
            "`cd web && npm ci && npm run build` (make install does it)")
    return BOUNDARIES


def latlng_to_xyz(lat, lng) -> np.ndarray:
    """Degrees -> (n, 3) unit vectors."""
    lat_rad, lng_rad = np.radians(lat), np.radians(lng)
    cos_lat = np.cos(lat_rad)
    return np.column_stack((cos_lat * np.cos(lng_rad), cos_lat * np.sin(lng_rad), np.sin(lat_rad)))


def km_to_chord(km) -> np.ndarray:
    return 2 * np.sin(np.minimum(np.asarray(km, dtype=np.float64) / EARTH_RADIUS_KM, np.pi) / 2)


def chord_to_km(chord) -> np.ndarray:
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(np.asarray(chord) / 2, 0, 1))


def cell_radius_km(resolution: int | None) -> float:
    """One cell's radius at an H3 resolution: the average hexagon's edge (= its circumradius);
    :data:`POINT_SNAP_KM` for a CSV gallery's points (None)."""
    if resolution is None:
        return POINT_SNAP_KM
    import h3

    return float(h3.average_hexagon_edge_length(int(resolution), "km"))


# -- decoding world-atlas ---------------------------------------------------------------------------------
def _arcs(topology: dict) -> list[np.ndarray]:
    t = topology.get("transform")
    out = []
    for arc in topology["arcs"]:
        pts = np.asarray(arc, dtype=np.float64).reshape(-1, 2)
        out.append(np.cumsum(pts, axis=0) * t["scale"] + t["translate"] if t else pts)
    return out


def _ring(arcs: list[np.ndarray], indices: list[int]) -> np.ndarray:
    parts = [(arcs[i] if i >= 0 else arcs[~i][::-1])[(1 if k else 0):] for k, i in enumerate(indices)]
    return np.concatenate(parts) if parts else np.empty((0, 2))


def fix_ring(ring: np.ndarray) -> np.ndarray:
    """A decoded ring as a planar lng, lat ring: antimeridian points moved to the ring's side; a ring
    that goes once round the globe (Antarctica's coast) closed over the pole it encloses."""
    ring = ring.copy()
    lng = ring[:, 0]
    d = np.diff(lng)
    winding = np.sum(d - 360 * np.round(d / 360))
    if abs(winding) > 180:  # circles a pole: start after the jump, close along +-180 and the pole
        jump = int(np.argmax(np.abs(d)))
        body = np.concatenate([ring[jump + 1 : -1], ring[: jump + 1]])
        body = body[np.abs(body[:, 0]) < 180] if np.abs(body[:, 0]).max() >= 180 else body
        pole = -90.0 if np.mean(body[:, 1]) < 0 else 90.0
        first, last = body[0], body[-1]
        west, east = (-180.0, 180.0) if first[0] < last[0] else (180.0, -180.0)
        return np.concatenate([[[west, first[1]]], body, [[east, last[1]], [east, pole], [west, pole],
                                                          [west, first[1]]]])
    edge = np.abs(lng) >= 179.9999
    if edge.any() and (~edge).any():
        lng[edge] = 180.0 * np.sign(np.median(lng[~edge]))
    return ring


@functools.cache
def boundaries() -> Boundaries:
    """Every country polygon part with its code, loaded once per process (~2 s)."""
    import json

    import shapely
    from scipy.spatial import cKDTree

    from geoindex.cells.geocode import places

    topology = json.loads(boundaries_path().read_text())
    arcs = _arcs(topology)
    parts, numeric, names = [], [], []
    for g in topology["objects"]["countries"]["geometries"]:
        polys = {"Polygon": [g.get("arcs", [])], "MultiPolygon": g.get("arcs", [])}.get(g.get("type"), [])
        for rings in polys:
            fixed = [fix_ring(_ring(arcs, r)) for r in rings]
            fixed = [r for r in fixed if len(r) >= 4]
            if not fixed:
                continue
            parts.append(shapely.Polygon(fixed[0], fixed[1:]))  # point-in-polygon needs rings, not validity
            numeric.append(g.get("id"))
            names.append(g.get("properties", {}).get("name", ""))
    parts_arr = np.empty(len(parts), dtype=object)
    parts_arr[:] = parts
    tree = shapely.STRtree(parts_arr)
    edge_xyz, edge_part = _densified_edges(parts_arr)
    edges = cKDTree(edge_xyz)
    p = places()
    place_part = _locate_parts(parts_arr, tree, edges, edge_part, p.lat, p.lng, POINT_SNAP_KM)
    code = _part_codes(parts_arr, place_part, numeric, names, p)
    return Boundaries(parts_arr, code, np.array(names, dtype=object), tree, edges, edge_part)


def _iso_alpha2(numeric: str | None) -> str | None:
    if numeric is None:
        return None
    try:
        import pycountry
    except ImportError as e:
        raise MissingDependencyError("country labels need `pycountry`: run `pip install pycountry`") from e
    c = pycountry.countries.get(numeric=str(numeric).zfill(3))
    return c.alpha_2 if c else None


def _part_codes(parts, place_part, numeric, names, p) -> np.ndarray:
    """Each part's code: its places' majority, else its polygon's ISO code, else the nearest place's.
    ``place_part``: (m,) the part each GeoNames place lies in (or on the coast of), -1 none."""
    pi = np.flatnonzero(place_part >= 0)
    part = place_part[pi]
    code = np.empty(len(parts), dtype=object)
    order = np.argsort(part, kind="stable")
    part_sorted, place_sorted = part[order], pi[order]
    bounds = np.searchsorted(part_sorted, np.arange(len(parts) + 1))
    for j in range(len(parts)):
        votes = p.country[place_sorted[bounds[j] : bounds[j + 1]]]
        if len(votes):
            values, counts = np.unique(votes.astype(str), return_counts=True)
            code[j] = str(values[np.argmax(counts)])
        else:
            code[j] = _iso_alpha2(numeric[j])
    def nearest_place_code(j: int) -> str:
        rep = parts[j].representative_point()
        _, i = p.tree.query(latlng_to_xyz(np.array([rep.y]), np.array([rep.x])), k=1)
        return str(p.country[int(i[0])])

    for j in np.flatnonzero([c is None for c in code]):  # no places, no ISO id
        code[j] = _UNSPLIT.get(names[j]) or nearest_place_code(j)
    # a polygon with overseas parts: a part without places takes its nearest place's code when that
    # code is one of its own polygon's parts' (Svalbard's smaller islands SJ, not NO)
    siblings: dict[str | None, set] = {}
    for j in range(len(parts)):
        siblings.setdefault(numeric[j], set()).add(code[j])
    for j in range(len(parts)):
        if len(siblings[numeric[j]]) > 1 and bounds[j + 1] == bounds[j]:
            near = nearest_place_code(j)
            if near in siblings[numeric[j]]:
                code[j] = near
    return code


def _densified_edges(parts) -> tuple[np.ndarray, np.ndarray]:
    """Every ring's points, with points added so that neighbours are at most BOUNDARY_STEP_KM apart."""
    import shapely

    xyz, owner = [], []
    for j, poly in enumerate(parts):
        for ring in shapely.get_rings(poly):
            pts = shapely.get_coordinates(ring)
            a = latlng_to_xyz(pts[:, 1], pts[:, 0])
            seg = np.linalg.norm(np.diff(a, axis=0), axis=1)
            n = np.maximum(1, np.ceil(chord_to_km(seg) / BOUNDARY_STEP_KM)).astype(np.int64)
            if n.max() > 1:
                reps = np.repeat(np.arange(len(seg)), n)
                frac = (np.arange(len(reps)) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(n, n)
                pts = np.column_stack([
                    pts[reps, 1] + frac * (pts[reps + 1, 1] - pts[reps, 1]),
                    pts[reps, 0] + frac * (pts[reps + 1, 0] - pts[reps, 0])])
                a = latlng_to_xyz(pts[:, 0], pts[:, 1])
            xyz.append(a)
            owner.append(np.full(len(a), j, dtype=np.int32))
    return np.concatenate(xyz), np.concatenate(owner)


# -- lookups ----------------------------------------------------------------------------------------------
def point_parts(lat, lng, snap_km: float | np.ndarray = POINT_SNAP_KM) -> np.ndarray:
    """(n,) int64: the polygon part each point (degrees) lies in, or whose boundary is within
    ``snap_km`` of it (offshore); -1 for open ocean."""
    b = boundaries()
    lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lng = np.atleast_1d(np.asarray(lng, dtype=np.float64))
    return _locate_parts(b.parts, b.tree, b.edge_xyz_tree, b.edge_part, lat, lng, snap_km)


def _locate_parts(parts, tree, edges, edge_part, lat, lng, snap_km) -> np.ndarray:
    import shapely

    out = np.full(len(lat), -1, dtype=np.int64)
    if not len(lat):
        return out
    # bounding-box candidates from the tree, then one vectorised test per part on a prepared polygon
    pi, part = tree.query(shapely.points(lng, lat))
    order = np.argsort(part, kind="stable")
    pi, part = pi[order], part[order]
    starts = np.flatnonzero(np.r_[True, part[1:] != part[:-1]]) if len(part) else np.empty(0, np.int64)
    for s, e in zip(starts, np.r_[starts[1:], len(part)]):
        poly = parts[part[s]]
        shapely.prepare(poly)
        cand = pi[s:e]
        cand = cand[out[cand] < 0]  # a point on a shared border keeps the first part found
        inside = shapely.contains_xy(poly, lng[cand], lat[cand])
        out[cand[inside]] = part[s]
    sea = np.flatnonzero(out < 0)
    if len(sea):
        snap = np.broadcast_to(np.asarray(snap_km, dtype=np.float64), lat.shape)[sea]
        reach = km_to_chord(snap)
        d, i = edges.query(latlng_to_xyz(lat[sea], lng[sea]), k=1, distance_upper_bound=float(reach.max()))
        hit = np.isfinite(d) & (d <= reach)
        out[sea[hit]] = edge_part[i[hit]]
    return out


def point_countries(lat, lng, snap_km: float | np.ndarray = POINT_SNAP_KM) -> np.ndarray:
    """(n,) object: ISO alpha-2 code of each point's country by the rule above; None at sea."""
    part = point_parts(lat, lng, snap_km)
    codes = np.empty(len(part), dtype=object)
    ok = part >= 0
    codes[ok] = boundaries().code[part[ok]]
    return codes


def known_codes() -> set[str]:
    """Every code a point can be labelled with."""
    return {c for c in boundaries().code if c}


def country_edges(codes):
    """A KD-tree over the boundary points of the parts labelled ``codes`` (None when there are none)."""
    return _country_edges(tuple(sorted(codes)))


@functools.cache
def _country_edges(codes: tuple[str, ...]):
    from scipy.spatial import cKDTree

    b = boundaries()
    mine = np.isin(b.code[b.edge_part], list(codes))
    if not mine.any():
        return None
    return cKDTree(b.edge_xyz_tree.data[mine])


# -- the manifest's record --------------------------------------------------------------------------------
def labels_entry() -> dict:
    """What an index's manifest records about its labels (``"labels"``)."""
    return {"version": LABEL_VERSION, "country": "admin-0 polygon (world-atlas countries-10m)",
            "place": "nearest GeoNames cities1000 place of that country"}


def stale_labels_note(manifest: dict, path) -> str | None:
    """A sentence for an index whose stored labels follow an older rule, else None."""
    version = (manifest.get("labels") or {}).get("version", 1)
    if version >= LABEL_VERSION:
        return None
    return (f"{path} was built with label version {version} (a cell's country was its nearest town's; "
            f"Antarctic cells could read 'AU'): answers are labelled by the current rule, but --country "
            f"filters select by the stored labels. Rebuild it with the same `geoindex build` command "
            f"to update them (label version {LABEL_VERSION}).")
