"""What a query asks and what it gets back: :class:`QueryOptions` in, :class:`LocateResult` out.

Loose input (CLI flags, HTTP bodies, Python keywords) becomes a QueryOptions at the edge; a
search string given there is parsed into :class:`~geoindex.index.search.SearchSettings` once, on
construction, and the query engine sees only that object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geoindex.constants import EMBED_DIM
from geoindex.errors import InvalidQueryError
from geoindex.index.search import SearchSettings
from geoindex.locate.regions import RegionFilter

DEFAULT_CANDIDATES = 256


@dataclass(frozen=True)
class QueryOptions:
    """How to answer a query (frozen; checked against the index by ``Geolocator.locate``).

    Args:
        k: predictions returned per query, 1..the index's cells.
        candidates: cells the softmax runs over (at least ``k`` are used); probabilities are
            conditional on them.
        search: search settings laid over the index's default: a
            :class:`~geoindex.index.search.SearchSettings` or a search string such as
            ``"nprobe=64,rerank=32"`` (parsed here, once).
        aggregate_res: sum the mass of cells into their H3 parents at this resolution before
            ranking (None: off).
        confidence: also return the smallest set of cells holding this share of the mass, in
            (0, 1], as a GeoJSON Feature (None: off).
        region: restrict answers to a region (:func:`~geoindex.locate.regions.make_filter`).
        joint: the queries are photos of one place: answer once from all of them (one result;
            :mod:`geoindex.locate.joint`).
        joint_scale: the logit scale's multiplier: 1 for a photo; for several photos of one place
            answered as one, the length of their summed embedding (set by ``joint``).

    Raises:
        InvalidArgumentError: ``search`` is a string that does not parse; the message names the
            bad part.
    """

    k: int = 5
    candidates: int = DEFAULT_CANDIDATES
    search: SearchSettings = field(default_factory=SearchSettings)
    aggregate_res: int | None = None
    confidence: float | None = None
    region: RegionFilter = field(default_factory=RegionFilter)
    joint: bool = False
    joint_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.search is None or isinstance(self.search, str):
            object.__setattr__(self, "search", SearchSettings.parse(self.search))
        if not isinstance(self.joint_scale, (int, float)) or not np.isfinite(self.joint_scale) or self.joint_scale <= 0:
            raise InvalidQueryError(f"joint_scale = {self.joint_scale!r} must be a positive number (1 for one photo; "
                                    "geoindex.locate.joint.joint_query gives it for several)")


@dataclass
class Prediction:
    """One ranked cell of an answer.

    Attributes:
        cell: the H3 cell id (int64), or the CSV row number for a CSV gallery.
        lat: latitude in degrees: the cell centre, or the refined point with ``refine``.
        lng: longitude in degrees, likewise.
        probability: GeoCLIP's softmax mass of this cell among the candidates, 0..1.
        country: ISO 3166-1 alpha-2 code of the admin-0 polygon that holds this point (``lat``,
            ``lng``: the refined point where there is one), or None at sea.
        admin1: first-level administrative area of ``place``, or None.
        place: the nearest GeoNames place (population >= 1000) of ``country``, or None.
        score: cosine similarity of the query and the cell's (or refined point's) vector.
        cell_h3: hex form of ``cell``; None for CSV galleries.
        place_km: great-circle km from this point to ``place``, or None.
    """

    cell: int
    lat: float
    lng: float
    probability: float
    country: str | None
    admin1: str | None
    place: str | None
    score: float  # cosine similarity of the best cell (inner product of unit vectors)
    cell_h3: str | None = None  # hex form of ``cell``; None for CSV galleries (row numbers)
    place_km: float | None = None  # km from (lat, lng) to ``place``

    def to_dict(self) -> dict:
        """The fields as a plain dict (JSON-ready)."""
        return dict(self.__dict__)  # flat fields: no deep copy needed (asdict costs ~10x more)


@dataclass
class LocateResult:
    """The answer to one query.

    Attributes:
        predictions: the ``k`` best :class:`Prediction`, best first.
        confidence_region: with ``QueryOptions(confidence=p)``, a GeoJSON Feature (MultiPolygon
            of the smallest set of cells holding mass p); else None.
        radius_km: great-circle km around the top prediction holding ``radius_confidence`` of the
            mass (:mod:`geoindex.locate.radius`); None when there is no prediction.
        radius_confidence: the share of the mass ``radius_km`` holds (the asked ``confidence``,
            default 0.9).
        warnings: sentences about the query (e.g. filter countries with no cells here), or None.
    """

    predictions: list[Prediction]
    confidence_region: dict | None = None  # GeoJSON Feature (MultiPolygon of the cells)
    neighbours: list | None = None  # nearest reference photos (geoindex.photos.Neighbour), when asked
    radius_km: float | None = None
    radius_confidence: float | None = None
    warnings: list[str] | None = None

    def to_dict(self) -> dict:
        """``{"predictions": [...], "radius_km", "radius_confidence", "confidence_region"?,
        "warnings"?}`` (JSON-ready)."""
        out = {"predictions": [p.to_dict() for p in self.predictions], "radius_km": self.radius_km,
               "radius_confidence": self.radius_confidence}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.confidence_region is not None:
            out["confidence_region"] = self.confidence_region
        if self.neighbours is not None:
            out["neighbours"] = [n.to_dict() for n in self.neighbours]
        return out


def validate_embeddings(xq) -> np.ndarray:
    """(n, 512) finite, non-zero numbers -> float32 L2-normalised. InvalidQueryError otherwise."""
    try:  # lists (JSON) as float64: a float32 cast would turn 1e39 into infinity
        arr = np.asarray(xq, dtype=xq.dtype if isinstance(xq, np.ndarray) and xq.dtype == np.float32 else np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidQueryError(f"embeddings must be numbers, shape (n, {EMBED_DIM}): {e}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != EMBED_DIM or arr.shape[0] == 0:
        raise InvalidQueryError(
            f"embeddings have shape {tuple(np.shape(xq))}, need (n, {EMBED_DIM}) with n >= 1: "
            "GeoCLIP image/location embeddings are 512-d"
        )
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise InvalidQueryError(f"embedding {int(np.flatnonzero(~finite)[0])} holds NaN or infinity: send finite numbers")
    with np.errstate(over="ignore"):
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if not np.isfinite(norms).all():  # huge components square past the dtype's range: scale first
        scale = np.abs(arr).max(axis=1, keepdims=True)
        arr = arr / np.where(scale > 0, scale, 1)
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidQueryError(f"embedding {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros: it has no direction")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)
