"""Candidates -> ranked predictions: GeoCLIP's softmax, H3 aggregation, cell metadata.

GeoCLIP scores a gallery with ``logits = exp(logit_scale) * cosine`` and a softmax over the whole
gallery. Here the softmax runs over the ``candidates`` best cells that the index returns (default
256, at least k): mass outside them is treated as zero. With exp(logit_scale) = 39.7, a candidate
0.1 below the best in cosine carries 1/53 of its weight, so the top few hundred hold nearly all the
mass of a dense gallery; widen ``candidates`` to check, at a small latency cost. Probabilities are
conditional on the candidate set (and on the region, when one is given).

With refinement (``refine=M``) the M best candidates carry their refined points' exact scores and
the softmax runs over those and the other candidates' scores alike: a refined candidate's logit
is that of its refined point. Aggregated predictions (``aggregate_res`` coarser than the index)
report the parent cell's centre, refined or not.

Every prediction is labelled from its own point (cell centre, refined point or parent centre) by
:func:`geoindex.cells.geocode.reverse_geocode`, the rule the build labels cells with; the answer's
``radius_km`` (:mod:`geoindex.locate.radius`) is measured over all the candidates' points.
"""

from __future__ import annotations

import h3
import numpy as np

from geoindex.cells.countries import POINT_SNAP_KM, cell_radius_km
from geoindex.cells.geocode import reverse_geocode
from geoindex.cells.h3ids import cell_to_parent
from geoindex.locate.geojson import confidence_region
from geoindex.locate.options import LocateResult, Prediction, QueryOptions
from geoindex.locate.radius import DEFAULT_CONFIDENCE, mass_radius_km
from geoindex.store.cell_table import CellTable


def rank(scores: np.ndarray, ids: np.ndarray, options: QueryOptions, table: CellTable,
         logit_scale: float, resolution: int | None, points: np.ndarray | None = None) -> LocateResult:
    """One query's (c,) float32 scores and (c,) int64 ids, best first (-1: none) -> its result.
    ``logit_scale``: exp of GeoCLIP's learnt scale (39.7); ``resolution``: the index's H3
    resolution (None for CSV galleries); ``points``: (c, 2) refined lat, lng where a candidate
    was refined below the grid, NaN where not (the cell centre is reported)."""
    keep = ids >= 0
    scores, ids = scores[keep].astype(np.float64), ids[keep]
    if points is not None:
        points = points[keep]
    if len(ids) == 0:
        return LocateResult([])
    logits = logit_scale * scores
    prob = np.exp(logits - logits.max())
    prob /= prob.sum()
    rows = table.rows(ids)
    if options.aggregate_res is not None and options.aggregate_res < (resolution or 0):
        groups = cell_to_parent(ids, options.aggregate_res)
    else:
        groups = ids
    # candidates arrive best first, so a group's first occurrence is its best member
    uniq, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    mass = np.bincount(inverse, weights=prob)
    order = np.argsort(-mass, kind="stable")
    centre_snap = cell_radius_km(resolution)
    preds, snap = [], []
    for g in order[: options.k]:
        j = first[g]
        row = rows[j]
        cell = int(uniq[g])
        if cell != int(ids[j]):
            lat, lng = h3.cell_to_latlng(h3.int_to_str(cell))
            snap.append(cell_radius_km(options.aggregate_res))
        elif points is not None and not np.isnan(points[j, 0]):
            lat, lng = points[j]
            snap.append(POINT_SNAP_KM)
        else:
            lat, lng = float(table.lat[row]), float(table.lng[row])
            snap.append(centre_snap)
        preds.append(Prediction(
            cell=cell, lat=float(lat), lng=float(lng), probability=float(mass[g]),
            country=None, admin1=None, place=None, score=float(scores[j]),
            cell_h3=h3.int_to_str(cell) if resolution is not None else None,
        ))
    label_predictions(preds, np.array(snap))
    region = None
    if options.confidence is not None:
        region = confidence_region(uniq[order], mass[order], options.confidence)
    confidence = options.confidence or DEFAULT_CONFIDENCE
    cand = np.column_stack((table.lat[rows], table.lng[rows]))
    if points is not None:
        refined = ~np.isnan(points[:, 0])
        cand[refined] = points[refined]
    radius = mass_radius_km(preds[0].lat, preds[0].lng, cand, prob, confidence,
                            floor_km=0.0 if resolution is None else centre_snap)
    return LocateResult(preds, region, radius_km=round(radius, 3), radius_confidence=confidence)


_LABELS: dict[tuple[float, float, float], tuple] = {}  # (lat, lng, snap_km) -> labels: cell centres repeat
LABEL_CACHE = 200_000


def label_predictions(preds: list[Prediction], snap_km) -> None:
    """Set each prediction's country, admin1, place and place_km from its own lat, lng (labels of
    points seen before come from a bounded cache: ~1 ms a query saved on a busy server)."""
    snap = np.broadcast_to(np.asarray(snap_km, dtype=np.float64), (len(preds),))
    keys = [(p.lat, p.lng, float(s)) for p, s in zip(preds, snap)]
    labels = [_LABELS.get(key) for key in keys]  # read once: another thread may clear the cache
    missing = [i for i, found in enumerate(labels) if found is None]
    if missing:
        geo = reverse_geocode(np.array([preds[i].lat for i in missing]), np.array([preds[i].lng for i in missing]),
                              snap_km=snap[missing])
        if len(_LABELS) + len(missing) > LABEL_CACHE:
            _LABELS.clear()
        for j, i in enumerate(missing):
            km = geo.place_km[j]
            labels[i] = _LABELS[keys[i]] = (geo.country[j], geo.admin1[j], geo.place[j],
                                            None if np.isnan(km) else round(float(km), 3))
    for p, label in zip(preds, labels):
        p.country, p.admin1, p.place, p.place_km = label
