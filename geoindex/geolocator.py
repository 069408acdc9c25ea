"""The query engine: embeddings -> top-k cells with probabilities, place names and regions.

``Geolocator(DIR)`` opens an index directory (verifying its manifest), keeps the FAISS index and
the hot columns of ``cells`` in memory, and answers :meth:`Geolocator.locate` for (n, 512)
embeddings; :mod:`geoindex.image_encoder` turns images and text into such embeddings.

Probabilities. GeoCLIP scores a gallery with ``logits = exp(logit_scale) * cosine`` and a softmax
over the whole gallery. Here the softmax runs over the ``candidates`` best cells that the index
returns (default 256, at least k): mass outside them is treated as zero. With exp(logit_scale)
= 39.7, a candidate 0.1 below the best in cosine carries 1/53 of its weight, so the top few hundred
hold nearly all the mass of a dense gallery; widen ``candidates`` to check, at a small latency cost.
Probabilities are conditional on the candidate set (and on the region, when one is given).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import h3
import numpy as np

from geoindex.cell_table import load_cell_table
from geoindex.errors import InvalidQueryError
from geoindex.faiss_index import apply_search_params, per_call_params
from geoindex.h3ids import cell_to_parent
from geoindex.location_encoder import EMBED_DIM, location_weights_sha256
from geoindex.manifest import open_index_dir
from geoindex.regions import RegionFilter, region_ids
from geoindex.rerank import ExactReranker, split_search

log = logging.getLogger(__name__)

DEFAULT_CANDIDATES = 256
REGION_CACHE = 64


@dataclass(frozen=True)
class QueryOptions:
    """How to answer. ``k``: predictions returned; ``candidates``: cells the softmax runs over;
    ``search``: FAISS search parameters overriding the index default; ``aggregate_res``: sum the
    mass of cells into H3 parents at this resolution before ranking; ``confidence``: also return
    the smallest set of cells holding this share of the mass, as GeoJSON; ``region``: filter."""

    k: int = 5
    candidates: int = DEFAULT_CANDIDATES
    search: str | None = None
    aggregate_res: int | None = None
    confidence: float | None = None
    region: RegionFilter = field(default_factory=RegionFilter)


@dataclass
class Prediction:
    cell: int
    lat: float
    lng: float
    probability: float
    country: str | None
    admin1: str | None
    place: str | None
    score: float  # cosine similarity of the best cell (inner product of unit vectors)
    cell_h3: str | None = None  # hex form of ``cell``; None for CSV galleries (row numbers)

    def to_dict(self) -> dict:
        return dict(self.__dict__)  # flat fields: no deep copy needed (asdict costs ~10x more)


@dataclass
class LocateResult:
    predictions: list[Prediction]
    confidence_region: dict | None = None  # GeoJSON Feature (MultiPolygon of the cells)

    def to_dict(self) -> dict:
        out = {"predictions": [p.to_dict() for p in self.predictions]}
        if self.confidence_region is not None:
            out["confidence_region"] = self.confidence_region
        return out


def validate_embeddings(xq) -> np.ndarray:
    """(n, 512) finite, non-zero floats -> float32 L2-normalised. InvalidQueryError otherwise."""
    try:
        arr = np.asarray(xq, dtype=np.float32)
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
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidQueryError(f"embedding {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros: it has no direction")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


class Geolocator:
    """Opens an index directory once; :meth:`locate` is the hot path (no DuckDB round trip)."""

    def __init__(self, index_dir: str | Path, verify: str = "size"):
        self.dir = open_index_dir(index_dir, verify=verify, weights_sha256=location_weights_sha256())
        m = self.dir.manifest
        self.index = faiss.read_index(str(self.dir.vectors_path))
        apply_search_params(self.index, self.dir.search)
        self.rerank_depth = split_search(self.dir.search)[1] or 0  # the index's default; per call: search="rerank=R"
        self.table = load_cell_table(self.dir.cells_path)
        self.logit_scale = float(math.exp(m["encoder"]["logit_scale"]))
        self.resolution: int | None = m["gallery"].get("resolution")
        self.known_countries = set(self.table.values["country"][1:])
        self.ivf = self.index if isinstance(self.index, faiss.IndexIVF) else None
        self._list_of_row: np.ndarray | None = None
        self._centroids: np.ndarray | None = None
        self._region_cache: dict[RegionFilter, np.ndarray] = {}
        self.reranker = ExactReranker(self._latlng_of)

    def _latlng_of(self, ids: np.ndarray) -> np.ndarray:
        """(m,) ids -> (m, 2) float64 lat, lng: the points the builder encoded."""
        rows = self.table.rows(ids)
        return np.column_stack((self.table.lat[rows], self.table.lng[rows]))

    def region_ids(self, region: RegionFilter) -> np.ndarray:
        """Sorted ids inside ``region`` (DuckDB), cached for the last REGION_CACHE filters."""
        ids = self._region_cache.get(region)
        if ids is None:
            ids = region_ids(self.dir.cells_path, region, self.resolution, self.known_countries)
            if len(self._region_cache) >= REGION_CACHE:
                self._region_cache.pop(next(iter(self._region_cache)))
            self._region_cache[region] = ids
        return ids

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def summary(self) -> dict:
        m = self.dir.manifest
        return {"path": str(self.dir.path), "gallery": m["gallery"], "factory": m["index"]["factory"],
                "search": m["index"]["search"], "ntotal": self.ntotal, "created": m["created"],
                "versions": m["versions"], "self_check": m.get("self_check")}

    # -- validation ---------------------------------------------------------------------------
    def check_options(self, options: QueryOptions) -> None:
        if not isinstance(options.k, int) or isinstance(options.k, bool) or not 1 <= options.k <= self.ntotal:
            raise InvalidQueryError(f"k = {options.k!r} must be an integer in 1..{self.ntotal} (the cells in this index)")
        if not isinstance(options.candidates, int) or options.candidates < 1:
            raise InvalidQueryError(f"candidates = {options.candidates!r} must be a positive integer (default {DEFAULT_CANDIDATES})")
        if options.aggregate_res is not None:
            if self.resolution is None:
                raise InvalidQueryError("aggregate_res needs an H3 index; this one holds CSV rows")
            if not isinstance(options.aggregate_res, int) or not 0 <= options.aggregate_res <= self.resolution:
                raise InvalidQueryError(
                    f"aggregate_res = {options.aggregate_res!r} must be an H3 resolution 0..{self.resolution} (the index's)"
                )
        if options.confidence is not None:
            if self.resolution is None:
                raise InvalidQueryError("confidence regions need an H3 index; this one holds CSV rows")
            if not 0 < options.confidence <= 1:
                raise InvalidQueryError(f"confidence = {options.confidence!r} must be in (0, 1], e.g. 0.9")
        if options.search:
            per_call_params(self.index, options.search)
        if options.region and len(self.region_ids(options.region)) == 0:
            raise InvalidQueryError("the region filter matches no cells in this index: widen it")

    # -- search ---------------------------------------------------------------------------------
    def rerank_for(self, options: QueryOptions) -> int:
        """The re-ranking depth of a call: its search string's ``rerank=R``, else the index's."""
        rerank = split_search(options.search)[1]
        return self.rerank_depth if rerank is None else rerank

    def search(self, xq: np.ndarray, n_candidates: int, options: QueryOptions,
               depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(D, I) for normalised queries, best first; region-restricted when ``options.region`` is
        set. The best ``depth`` candidates (default: the call's rerank R) are re-scored exactly and
        sorted; later ones keep their approximate scores (which run low: codes lose energy)."""
        depth = min(self.rerank_for(options) if depth is None else depth, self.ntotal)
        if not depth:
            return self._search(xq, n_candidates, options)
        D, I = self.reranker.rerank(xq, *self._search(xq, max(n_candidates, depth), options), depth)
        return D[:, :n_candidates], I[:, :n_candidates]

    def _search(self, xq: np.ndarray, n_candidates: int, options: QueryOptions) -> tuple[np.ndarray, np.ndarray]:
        if options.region:
            ids = self.region_ids(options.region)
            return self._search_region(xq, min(n_candidates, len(ids)), ids)
        if split_search(options.search)[0]:
            # A SearchParameters object, not a change to the shared index: safe across threads.
            return self.index.search(xq, n_candidates, params=per_call_params(self.index, options.search))
        return self.index.search(xq, n_candidates)

    def _lists(self) -> tuple[np.ndarray, np.ndarray]:
        """Per table row, the inverted list holding it; and the (nlist, d) centroids."""
        if self._list_of_row is None:
            ivf = self.ivf
            invlists = ivf.invlists
            list_of_row = np.full(len(self.table), -1, dtype=np.int64)
            for lst in range(ivf.nlist):
                size = invlists.list_size(lst)
                if size:
                    ptr = invlists.get_ids(lst)
                    ids = faiss.rev_swig_ptr(ptr, size).copy()
                    invlists.release_ids(lst, ptr)
                    list_of_row[self.table.rows(ids)] = lst
            self._centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
            self._list_of_row = list_of_row
        return self._list_of_row, self._centroids

    def _search_region(self, xq, n_candidates, ids):
        """True top-k inside the region: every inverted list holding a region cell is scanned
        (no nprobe cut-off), and an ID selector keeps only region cells."""
        selector = faiss.IDSelectorBatch(ids)  # named: FAISS holds a raw pointer to it
        if self.ivf is not None:
            list_of_row, centroids = self._lists()
            lists = np.unique(list_of_row[self.table.rows(ids)])
            lists = lists[lists >= 0]
            Iq = np.ascontiguousarray(np.broadcast_to(lists, (len(xq), len(lists))), dtype=np.int64)
            Dq = np.ascontiguousarray(xq @ centroids[lists].T, dtype=np.float32)
            params = faiss.SearchParametersIVF()
            params.sel = selector
            params.nprobe = len(lists)
            params.max_codes = 0
            # The Python wrapper refuses params here; the C++ call takes them (nprobe = lists given).
            n = len(xq)
            D = np.empty((n, n_candidates), dtype=np.float32)
            I = np.empty((n, n_candidates), dtype=np.int64)
            self.ivf.search_preassigned_c(n, faiss.swig_ptr(xq), n_candidates, faiss.swig_ptr(Iq),
                                          faiss.swig_ptr(Dq), faiss.swig_ptr(D), faiss.swig_ptr(I),
                                          False, params)
        else:
            params = faiss.SearchParameters()
            params.sel = selector
            try:
                D, I = self.index.search(xq, n_candidates, params=params)
            except RuntimeError as e:
                raise InvalidQueryError(
                    f"region filters are not supported for index {self.dir.factory!r} ({e}): "
                    "rebuild with a Flat, IVF or IVFH3 factory"
                ) from e
        del selector
        return D, I

    # -- ranking ---------------------------------------------------------------------------------
    def locate(self, xq, options: QueryOptions | None = None) -> list[LocateResult]:
        """(n, 512) embeddings -> n LocateResults, predictions best first."""
        options = options or QueryOptions()
        self.check_options(options)
        xq = validate_embeddings(xq)
        n_candidates = min(max(options.k, options.candidates), self.ntotal)
        rerank = self.rerank_for(options)
        # every prediction returned is re-ranked (k > R re-ranks k); the softmax tail beyond keeps
        # approximate scores: some mass there is closer to the truth than none
        D, I = self.search(xq, n_candidates, options, depth=max(rerank, options.k) if rerank else 0)
        return [self._rank(D[i], I[i], options) for i in range(len(xq))]

    def _rank(self, scores: np.ndarray, ids: np.ndarray, options: QueryOptions) -> LocateResult:
        keep = ids >= 0
        scores, ids = scores[keep].astype(np.float64), ids[keep]
        if len(ids) == 0:
            return LocateResult([])
        logits = self.logit_scale * scores
        prob = np.exp(logits - logits.max())
        prob /= prob.sum()
        rows = self.table.rows(ids)
        if options.aggregate_res is not None and options.aggregate_res < (self.resolution or 0):
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
            else:
                lat, lng = float(self.table.lat[row]), float(self.table.lng[row])
            preds.append(Prediction(
                cell=cell, lat=float(lat), lng=float(lng), probability=float(mass[g]),
                country=self.table.text("country", row), admin1=self.table.text("admin1", row),
                place=self.table.text("place", row), score=float(scores[j]),
                cell_h3=h3.int_to_str(cell) if self.resolution is not None else None,
            ))
        region = None
        if options.confidence is not None:
            region = confidence_region(uniq[order], mass[order], options.confidence)
        return LocateResult(preds, region)


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
