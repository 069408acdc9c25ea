"""Draw a query's predictions (H3 cells coloured by probability, the confidence region, the true
location) or a benchmark's errors on the world basemap, as PNG. matplotlib without pyplot: no
global backend, safe in servers and threads."""

from __future__ import annotations

from pathlib import Path

import h3
import numpy as np

from geoindex.atomic import atomic_path
from geoindex.cells.geocode import haversine_km
from geoindex.maps.basemap import countries

OCEAN, LAND, BORDER = "#dce9f5", "#f3f1ec", "#a5a5a5"
CMAP = "YlOrRd"
WORLD = (-180.0, 180.0, -90.0, 90.0)


def draw_result(result, out: str | Path, *, true_latlng: tuple[float, float] | None = None,
                title: str | None = None, dpi: int = 150) -> Path:
    """PNG map of one :class:`~geoindex.locate.options.LocateResult`: its cells (hexagons coloured by
    probability, numbered by rank), its confidence region when it has one, and ``true_latlng``
    (lat, lng degrees) with its distance to the top prediction. Zoomed to what it shows."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize

    fig, ax = _figure(dpi)
    preds = result.predictions
    probs = np.array([p.probability for p in preds])
    norm = Normalize(0, max(float(probs.max()) if len(probs) else 1.0, 1e-9))
    cmap = _cmap(CMAP)
    shapes, colours, anchors = [], [], []
    for p, prob in zip(preds, probs):
        ring = _cell_ring(p.cell) if _is_h3(p.cell) else None
        if ring is not None:
            shapes.append(ring)
            colours.append(cmap(norm(prob)))
        anchors.append((p.lng, p.lat))
    region_rings = _region_rings(result.confidence_region)
    points = [(lng, lat) for lng, lat in anchors] + [tuple(r.mean(axis=0)) for r in region_rings]
    if true_latlng is not None:
        points.append((true_latlng[1], true_latlng[0]))
    extent = _extent(points, shapes + region_rings)
    _basemap(ax, extent)
    for offset in _offsets(extent):
        if shapes:
            ax.add_collection(PolyCollection([s + (offset, 0) for s in shapes], facecolors=colours, alpha=0.8,
                                             edgecolors="#7a1f00", linewidths=0.6, zorder=3))
        for ring in region_rings:
            ax.plot(ring[:, 0] + offset, ring[:, 1], color="#2c5aa0", lw=1.4, ls="--", zorder=4)
        for rank, (lng, lat) in enumerate(anchors, 1):
            ax.annotate(str(rank), (lng + offset, lat), ha="center", va="center", fontsize=7, weight="bold", zorder=5)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.7, pad=0.02, label="probability")
    words = []
    if preds:
        top = preds[0]
        place = ", ".join(x for x in (top.place, top.admin1, top.country) if x) or f"{top.lat:.3f}, {top.lng:.3f}"
        words.append(f"top 1: {place} (p = {top.probability:.2f})")
    if true_latlng is not None:
        lat, lng = true_latlng
        for offset in _offsets(extent):
            ax.plot(lng + offset, lat, marker="*", ms=13, color="#1a9850", mec="black", mew=0.8, zorder=6)
        if preds:
            km = float(haversine_km(lat, lng, preds[0].lat, preds[0].lng))
            words.append(f"{km:,.1f} km from the true location (star)")
    if result.confidence_region is not None:
        words.append(f"dashed: {result.confidence_region['properties'].get('mass', 0):.0%} confidence region")
    ax.set_title(title or "geoindex", loc="left", fontsize=11)
    ax.text(0, -0.06, "; ".join(words), transform=ax.transAxes, fontsize=8, va="top")
    return _save(fig, out)


def draw_errors(true_latlng: np.ndarray, pred_latlng: np.ndarray, out: str | Path, *, title: str | None = None,
                dpi: int = 150) -> Path:
    """PNG world map of errors: a segment from each true location (n, 2 lat, lng) to its prediction,
    coloured by great-circle km on a log scale."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import LogNorm

    true_latlng, pred_latlng = np.asarray(true_latlng, np.float64), np.asarray(pred_latlng, np.float64)
    km = haversine_km(true_latlng[:, 0], true_latlng[:, 1], pred_latlng[:, 0], pred_latlng[:, 1])
    fig, ax = _figure(dpi)
    _basemap(ax, WORLD)
    # the short way round: a prediction across the antimeridian is drawn past +-180 (clipped)
    pred_lng = pred_latlng[:, 1] + 360 * np.round((true_latlng[:, 1] - pred_latlng[:, 1]) / 360)
    segments = np.stack([np.column_stack((true_latlng[:, 1], true_latlng[:, 0])),
                         np.column_stack((pred_lng, pred_latlng[:, 0]))], axis=1)
    norm = LogNorm(1, max(20_000, float(km.max()) if len(km) else 1))
    cmap = _cmap("plasma_r")
    ax.add_collection(LineCollection(segments, colors=cmap(norm(np.maximum(km, 1))), linewidths=0.5, alpha=0.6, zorder=3))
    ax.scatter(true_latlng[:, 1], true_latlng[:, 0], s=2, color="black", zorder=4)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.7, pad=0.02, label="error (km, log)")
    median = float(np.median(km)) if len(km) else float("nan")
    ax.set_title(title or f"{len(km):,} queries: true location (dot) to top-1 prediction", loc="left", fontsize=11)
    ax.text(0, -0.06, f"median error {median:,.1f} km; within 25 km {np.mean(km <= 25):.1%}, "
                      f"750 km {np.mean(km <= 750):.1%}", transform=ax.transAxes, fontsize=8, va="top")
    return _save(fig, out)


# -- pieces ----------------------------------------------------------------------------------------
def _figure(dpi: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor(OCEAN)
    ax.tick_params(labelsize=7)
    return fig, ax


def _cmap(name: str):
    from matplotlib import colormaps

    return colormaps[name]


def _is_h3(cell: int) -> bool:
    return cell > 0 and h3.is_valid_cell(h3.int_to_str(int(cell)))


def _cell_ring(cell: int) -> np.ndarray:
    """(m, 2) lng, lat of a cell's boundary, continuous across the antimeridian (lngs past 180)."""
    ring = np.array(h3.cell_to_boundary(h3.int_to_str(int(cell))))[:, ::-1]
    if np.ptp(ring[:, 0]) > 180:
        ring[ring[:, 0] < 0, 0] += 360
    return ring


def _region_rings(feature: dict | None) -> list[np.ndarray]:
    if not feature:
        return []
    geometry = feature.get("geometry") or {}
    polygons = {"Polygon": [geometry.get("coordinates", [])],
                "MultiPolygon": geometry.get("coordinates", [])}.get(geometry.get("type"), [])
    return [np.asarray(ring, dtype=np.float64) for polygon in polygons for ring in polygon if len(ring)]


def _extent(points: list[tuple[float, float]], rings: list[np.ndarray]) -> tuple[float, float, float, float]:
    """(west, east, south, north) around what is drawn, padded; the world when it spans most of it."""
    xy = np.array(points + [tuple(p) for r in rings for p in r], dtype=np.float64).reshape(-1, 2)
    if not len(xy):
        return WORLD
    lng = xy[:, 0].copy()
    if np.ptp(lng) > 180:  # maybe one cluster across the antimeridian
        lng[lng < 0] += 360
    w, e, s, n = lng.min(), lng.max(), xy[:, 1].min(), xy[:, 1].max()
    if e - w > 200 or n - s > 100:
        return WORLD
    pad = max(0.25 * max(e - w, n - s), 1.2)  # a degree or so at least: some coast or border for context
    w, e, s, n = w - pad, e + pad, max(-90, s - pad), min(90, n + pad)
    # keep a map's proportions near 10:6 so small extents do not turn into slivers
    mid = np.radians((s + n) / 2)
    width_km, height_km = (e - w) * np.cos(mid), n - s
    if width_km < height_km * 1.4:
        grow = (height_km * 1.4 / max(np.cos(mid), 0.1) - (e - w)) / 2
        w, e = w - grow, e + grow
    else:
        grow = (width_km / 1.4 - height_km) / 2
        s, n = max(-90, s - grow), min(90, n + grow)
    return (float(w), float(e), float(s), float(n))


def _offsets(extent) -> list[float]:
    """Copies of the world needed to fill an extent that runs past +-180."""
    w, e = extent[0], extent[1]
    return [o for o in (-360.0, 0.0, 360.0) if w < 180 + o and e > -180 + o]


def _basemap(ax, extent) -> None:
    from matplotlib.collections import PolyCollection

    rings = [ring for country in countries() for ring in country.rings if len(ring) > 2]
    # rings running past +-180 are also drawn one world over, where their other side shows
    rings += [r - (360, 0) for r in rings if r[:, 0].max() > 180] + [r + (360, 0) for r in rings if r[:, 0].min() < -180]
    for offset in _offsets(extent):
        ax.add_collection(PolyCollection([r + (offset, 0) for r in rings], facecolors=LAND, edgecolors=BORDER,
                                         linewidths=0.3, zorder=1))
    w, e, s, n = extent
    ax.set_xlim(w, e)
    ax.set_ylim(s, n)
    mid = np.radians((s + n) / 2)
    ax.set_aspect(1 / max(np.cos(mid), 0.2) if extent != WORLD else 1)
    ax.grid(color="white", lw=0.4, zorder=0)


PROVENANCE = "geoindex-map"  # a PNG text chunk: this map was drawn by geoindex (replaceable without --overwrite)


def is_our_map(path: str | Path) -> bool:
    """Whether the existing file ``path`` is a PNG map geoindex drew (its PROVENANCE text chunk)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format == "PNG" and PROVENANCE in im.info
    except (OSError, ValueError):
        return False


def check_map_outs(paths: list[Path], overwrite: bool) -> None:
    """Refuse a map path that holds a file geoindex did not draw, unless ``overwrite``."""
    from geoindex.errors import InvalidArgumentError

    for path in paths:
        if Path(path).exists() and not overwrite and not is_our_map(path):
            raise InvalidArgumentError(f"--map: {str(path)!r} exists and is not a map geoindex drew: give another "
                                       "path, or add --overwrite to replace it")


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", metadata={PROVENANCE: "1"})
    return out
