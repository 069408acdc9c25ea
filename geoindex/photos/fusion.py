"""Fusing the two galleries: the cell posterior and the nearest reference photos' places.

The rule. For one query, let the cell gallery give predictions c with probability p_c at x_c (the
best ``pool`` of them), and the photo gallery neighbours i with cosine similarity s_i at z_i. Only
neighbours with s_i >= ``min_similarity`` vote; their weights are a_i = softmax(``sharpness`` * s_i).
With the Gaussian kernel K(y, x) = exp(-d_km(y, x)^2 / (2 h^2)) on the sphere (h = ``bandwidth_km``):

    cells(y)  = sum_c p_c K(y, x_c)          the cell posterior, spread over the kernel
    photos(y) = sum_i a_i K(y, z_i)          the kernel density of the neighbours' places
    fused(y)  = (1 - w) cells(y) + w photos(y)

scored at every candidate y: each cell prediction and each voting neighbour's place. The answer is
the candidates by fused score, best first, with ``probability`` = fused(y) / sum of fused over the
candidates (a normalised score: nearby candidates share kernel mass, so it is not a calibrated
probability). A candidate that is a photo's place reports that place (finer than any cell), the
cell it falls in (H3 indexes) and ``score`` = that photo's similarity.

An exact copy: when the best neighbour's similarity is >= ``exact`` (0.999), the query is that
photo, so its place is the top-1 whatever the cells say (its fused score is raised to the best candidate's),
unless w = 0.

The default weight w = 0.25 is conservative: it is not tuned on real photos (no CLIP weights or
datasets here; docs/photos.md) and lets the photos overrule the cells only where several of them
agree, or where the cell posterior is spread thin. w = 0 gives the cell gallery's answer exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from geoindex.cells.geocode import haversine_km
from geoindex.errors import InvalidQueryError
from geoindex.locate.options import LocateResult, Prediction


@dataclass(frozen=True)
class FusionSettings:
    """``k``: neighbours returned and voting; ``weight``: w, the photos' share (0 = cells alone);
    ``bandwidth_km``: h; ``sharpness``: softmax scale over similarities; ``min_similarity``: the
    least similarity that votes; ``exact``: the similarity of an exact copy; ``pool``: the cell
    predictions scored (at least the k asked for)."""

    k: int = 10
    weight: float = 0.25
    bandwidth_km: float = 25.0
    sharpness: float = 50.0
    min_similarity: float = 0.5
    exact: float = 0.999
    pool: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or not 1 <= self.k <= 1000:
            raise InvalidQueryError(f"neighbours k = {self.k!r} must be an integer in 1..1000 (default 10)")
        if not 0 <= self.weight <= 1:
            raise InvalidQueryError(f"photo weight = {self.weight!r} must be in [0, 1] (0: cells alone; default 0.25)")
        if not self.bandwidth_km > 0:
            raise InvalidQueryError(f"bandwidth_km = {self.bandwidth_km!r} must be positive (default 25)")
        if not -1 <= self.min_similarity <= self.exact <= 1:
            raise InvalidQueryError(f"min_similarity = {self.min_similarity!r} must be in [-1, exact = {self.exact}] "
                                    "(default 0.5): an exact copy always votes")


@dataclass
class Neighbour:
    """One reference photo near a query: where it was taken and how alike it is."""

    id: int
    image: str
    lat: float
    lng: float
    similarity: float
    km_from_top: float
    metadata: dict
    place: str | None = None  # the nearest GeoNames place's names, as cells carry them
    admin1: str | None = None
    country: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _kernel(lat1, lng1, lat2, lng2, h_km: float) -> np.ndarray:
    """(a, b) Gaussian kernel between two point sets (degrees)."""
    d = haversine_km(np.asarray(lat1)[:, None], np.asarray(lng1)[:, None], np.asarray(lat2)[None, :],
                     np.asarray(lng2)[None, :])
    return np.exp(-0.5 * (d / h_km) ** 2)


def fuse(result: LocateResult, neighbours: list[Neighbour], settings: FusionSettings, k: int,
         cell_of=None, floor_km: float = 0.0) -> LocateResult:
    """One query's cell result (its ``pool`` best predictions) and neighbours (best first) -> the
    fused result with ``k`` predictions and the neighbours attached (km measured from the new top-1).
    ``cell_of(lat, lng)``: the cell id holding a point and its hex form (None for CSV galleries).
    When the photos take part, ``radius_km`` is measured again around the fused top-1 over the fused
    mass (never below ``floor_km``, one cell's radius): the cells' radius was around another point."""
    preds = result.predictions
    voters = [n for n in neighbours if n.similarity >= settings.min_similarity]
    exact = neighbours[0] if neighbours and neighbours[0].similarity >= settings.exact else None
    if not preds and not voters:
        return replace(result, neighbours=neighbours)
    cell_lat = np.array([p.lat for p in preds])
    cell_lng = np.array([p.lng for p in preds])
    p = np.array([p.probability for p in preds])
    seen, photo_pts = set(), []
    for n in voters:  # one candidate per distinct place
        if (n.lat, n.lng) not in seen:
            seen.add((n.lat, n.lng))
            photo_pts.append(n)
    cand_lat = np.concatenate([cell_lat, [n.lat for n in photo_pts]])
    cand_lng = np.concatenate([cell_lng, [n.lng for n in photo_pts]])
    h = settings.bandwidth_km
    cells = _kernel(cand_lat, cand_lng, cell_lat, cell_lng, h) @ p if len(preds) else np.zeros(len(cand_lat))
    w = settings.weight if voters else 0.0
    photos = np.zeros(len(cand_lat))
    if voters:
        s = np.array([n.similarity for n in voters])
        a = np.exp(settings.sharpness * (s - s.max()))
        photos = _kernel(cand_lat, cand_lng, [n.lat for n in voters], [n.lng for n in voters], h) @ (a / a.sum())
    fused = (1 - w) * cells + w * photos
    if w == 0:  # the cells alone: their own order and mass, no photo place among the answers
        fused = np.concatenate([p, np.zeros(len(photo_pts))])
    order = [j for j in np.argsort(-fused, kind="stable") if w > 0 or j < len(preds)]
    if exact is not None and w > 0:  # an exact copy votes (min_similarity <= exact): its place goes first
        top = len(preds) + next(i for i, n in enumerate(photo_pts) if (n.lat, n.lng) == (exact.lat, exact.lng))
        fused[top] = fused.max()  # its score ties the best one's: probabilities stay in rank order
        order.remove(top)
        order.insert(0, top)
    total = fused.sum() or 1.0
    out, places = [], []
    for j in order[:k]:
        if j < len(preds):
            out.append(replace(preds[j], probability=float(fused[j] / total)))
        else:
            places.append(_photo_prediction(photo_pts[j - len(preds)], float(fused[j] / total), cell_of))
            out.append(places[-1])
    if places:  # labelled from their own points, as every point is: one call for all of them
        from geoindex.cells.countries import POINT_SNAP_KM
        from geoindex.locate.ranking import label_predictions

        label_predictions(places, POINT_SNAP_KM)
    top_lat, top_lng = out[0].lat, out[0].lng
    for n in neighbours:
        n.km_from_top = float(haversine_km(top_lat, top_lng, n.lat, n.lng))
    radius = result.radius_km
    if w > 0 and result.radius_confidence is not None:
        from geoindex.locate.radius import mass_radius_km

        radius = round(mass_radius_km(top_lat, top_lng, np.column_stack((cand_lat, cand_lng)), fused / total,
                                      result.radius_confidence, floor_km), 3)
    return replace(result, predictions=out, neighbours=neighbours, radius_km=radius)


def _photo_prediction(n: Neighbour, probability: float, cell_of) -> Prediction:
    """A reference photo's place as a prediction; its labels are set by the caller."""
    cell, cell_h3 = cell_of(n.lat, n.lng) if cell_of is not None else (-1, None)
    return Prediction(cell=cell, lat=n.lat, lng=n.lng, probability=probability, country=None,
                      admin1=None, place=None, score=n.similarity, cell_h3=cell_h3)

