"""``radius_km``: how far from its top answer the asked share of an answer's mass lies.

For one query's candidates (points in degrees, probabilities summing to 1 over the candidates), the
radius is the smallest great-circle distance r from the top-1 point such that the candidates within
r hold at least ``confidence`` of the mass. A cell's mass is counted at its centre (or its refined
point), so the radius is never reported below one cell's radius: the mass is spread over the cell.

What it means: the region within ``radius_km`` of the top answer holds ``confidence`` of GeoCLIP's
softmax mass *among the candidates*. GeoCLIP's probabilities are not calibrated (the logit scale was
learnt for a 100K gallery, and mass outside the candidates counts as zero), so this is a measure of
how spread out the model's belief is, not a guarantee that 90% of photos lie within it
(docs/querying.md).
"""

from __future__ import annotations

import numpy as np

from geoindex.cells.geocode import haversine_km

DEFAULT_CONFIDENCE = 0.9


def mass_radius_km(lat: float, lng: float, points: np.ndarray, prob: np.ndarray,
                   confidence: float = DEFAULT_CONFIDENCE, floor_km: float = 0.0) -> float:
    """Radius around (lat, lng) holding ``confidence`` of the mass.

    Args:
        lat, lng: the top answer, degrees.
        points: (c, 2) float64 lat, lng of the candidates, degrees.
        prob: (c,) their probabilities (summing to 1, or to less: the share is of their sum).
        confidence: the share of the mass, in (0, 1].
        floor_km: the smallest radius reported (one cell's radius).

    Returns:
        km, a float.
    """
    prob = np.asarray(prob, dtype=np.float64)
    if not len(prob) or prob.sum() <= 0:
        return float(floor_km)
    d = haversine_km(lat, lng, points[:, 0], points[:, 1])
    order = np.argsort(d, kind="stable")
    cum = np.cumsum(prob[order]) / prob.sum()
    i = min(int(np.searchsorted(cum, confidence - 1e-12)), len(cum) - 1)
    return float(max(d[order][i], floor_km))
