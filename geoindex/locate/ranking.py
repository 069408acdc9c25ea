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
"""

from __future__ import annotations

import h3
import numpy as np

from geoindex.cells.h3ids import cell_to_parent
from geoindex.locate.geojson import confidence_region
from geoindex.locate.options import LocateResult, Prediction, QueryOptions
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
    preds = []
    for g in order[: options.k]:
        j = first[g]
        row = rows[j]
        cell = int(uniq[g])
        if cell != int(ids[j]):
            lat, lng = h3.cell_to_latlng(h3.int_to_str(cell))
        elif points is not None and not np.isnan(points[j, 0]):
            lat, lng = points[j]
        else:
            lat, lng = float(table.lat[row]), float(table.lng[row])
        preds.append(Prediction(
            cell=cell, lat=float(lat), lng=float(lng), probability=float(mass[g]),
            country=table.text("country", row), admin1=table.text("admin1", row),
            place=table.text("place", row), score=float(scores[j]),
            cell_h3=h3.int_to_str(cell) if resolution is not None else None,
        ))
    region = None
    if options.confidence is not None:
        region = confidence_region(uniq[order], mass[order], options.confidence)
    return LocateResult(preds, region)
