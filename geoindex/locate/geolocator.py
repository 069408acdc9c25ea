"""The query engine: embeddings -> top-k cells with probabilities, place names and regions.

``Geolocator(DIR)`` opens an index directory (verifying its manifest), keeps the FAISS index and
the hot columns of ``cells`` in memory, and answers :meth:`Geolocator.locate` for (n, 512)
embeddings; :mod:`geoindex.encoders.clip` turns images and text into such embeddings. How
candidates become probabilities: :mod:`geoindex.locate.ranking`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np

from geoindex.cells.region import describe_region, points_inside, region_from_dict
from geoindex.encoders.location import location_weights_sha256
from geoindex.errors import InvalidQueryError
from geoindex.index.search import SearchSettings, apply_search_settings, per_call_params
from geoindex.locate.options import DEFAULT_CANDIDATES, LocateResult, QueryOptions, validate_embeddings
from geoindex.locate.ranking import rank
from geoindex.locate.refine import Refiner
from geoindex.locate.regions import RegionFilter, region_ids
from geoindex.locate.rerank import ExactReranker, StoreReranker, rescore_head
from geoindex.store.cell_table import load_cell_table
from geoindex.store.exact_store import open_store
from geoindex.store.manifest import open_index_dir, rebuild_hint

log = logging.getLogger(__name__)

REGION_CACHE = 64


class Geolocator:
    """Opens an index directory once; :meth:`locate` is the hot path (no DuckDB round trip)."""

    def __init__(self, index_dir: str | Path, verify: str = "size", use_store: bool = True,
                 weights: str | Path | None = None, photos: str | Path | None = None, fusion=None):
        """``use_store``: re-rank from the index's exact store when it has one (False: with the
        encoder, as an index without a store does). ``weights``: the GeoCLIP weights folder the
        index was built with (``--weights``; default the released weights): an index built with
        others is refused. ``photos``: a reference photo gallery (``geoindex build --photos``) whose
        nearest photos each answer gains and fuses (``fusion``: a geoindex.photos.FusionSettings)."""
        self.dir = open_index_dir(index_dir, verify=verify, weights_sha256=location_weights_sha256(weights))
        # on-disk lists (DIR/lists.ivfdata) are memory-mapped from beside vectors.faiss, wherever the dir is now
        self.index = faiss.read_index(str(self.dir.vectors_path), faiss.IO_FLAG_ONDISK_SAME_DIR)
        apply_search_settings(self.index, self.dir.search)
        self.table = load_cell_table(self.dir.cells_path)
        self.logit_scale = float(math.exp(self.dir.logit_scale))
        self.resolution: int | None = self.dir.resolution
        self.known_countries = set(self.table.values["country"][1:])
        self.ivf = self.index if isinstance(self.index, faiss.IndexIVF) else None
        self._list_of_row: np.ndarray | None = None
        self._centroids: np.ndarray | None = None
        self._region_cache: dict[RegionFilter, np.ndarray] = {}
        self.encoder_reranker = ExactReranker(self._latlng_of, weights=weights)
        self.store = open_store(self.dir.path, self.dir.store, len(self.table),
                                rebuild_hint(self.dir.path, self.dir.manifest)) if use_store else None
        self.reranker = self.encoder_reranker if self.store is None else StoreReranker(self.store, self.table.rows)
        self.refiner = Refiner(lambda: self.encoder_reranker.model)  # one encoder for both
        self.region = region_from_dict(self.dir.manifest["gallery"].get("region"))  # None: the whole globe
        self.photos = self.fusion = None
        if photos is not None:
            from geoindex.photos.evidence import open_photos

            self.photos, self.fusion = open_photos(photos, weights, fusion, verify)

    def covers(self, lat, lng) -> np.ndarray:
        """(n,) bool: which points (degrees) lie in the region this index was built for (all True
        for a global index). A photo taken outside still gets answers, all of them inside."""
        lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        if self.region is None:
            return np.ones(len(lat), dtype=bool)
        return points_inside(self.region, lat, lng)

    def outside_note(self, lat: float, lng: float) -> str | None:
        """A sentence for a point outside this index's region, else None."""
        if self.covers(lat, lng)[0]:
            return None
        return (f"{lat:.4f}, {lng:.4f} is outside this index's region ({describe_region(self.region)}): "
                "its answers all lie inside it")

    @property
    def rerank_depth(self) -> int:
        """The index's default re-ranking depth (per call: ``search="rerank=R"``)."""
        return self.dir.search.rerank_depth

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
                "search": str(self.dir.search), "ntotal": self.ntotal, "created": m["created"],
                "versions": m["versions"], "self_check": m.get("self_check"),
                "store": None if self.store is None else self.store.kind, "memory": m.get("memory"),
                "region": m["gallery"].get("region"), "countries": sorted(self.known_countries)}

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
        if options.search.refine_starts and self.resolution is None and self.refiner.settings.method == "descent":
            raise InvalidQueryError("refine descends H3 cells: this index holds CSV rows; use "
                                    "Refiner(RefineSettings(method='newton')) or leave refine off")
        if options.search.names_faiss:
            per_call_params(self.index, options.search)
        if options.region and len(self.region_ids(options.region)) == 0:
            within = f" (it was built for {describe_region(self.region)} only)" if self.region else ""
            raise InvalidQueryError(f"the region filter matches no cells in this index{within}: widen it")

    # -- search ---------------------------------------------------------------------------------
    def settings_for(self, options: QueryOptions) -> SearchSettings:
        """The settings a call runs with: its own laid over the index's default."""
        return options.search.over(self.dir.search)

    def search(self, xq: np.ndarray, n_candidates: int, options: QueryOptions,
               depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(D, I) for normalised queries, best first; region-restricted when ``options.region`` is
        set. The best ``depth`` candidates (default: the call's rerank R) are re-scored exactly and
        sorted; later ones keep their approximate scores (which run low: codes lose energy)."""
        depth = min(self.settings_for(options).rerank_depth if depth is None else depth, self.ntotal)
        if not depth:
            return self._search(xq, n_candidates, options)
        D, I = self.reranker.rerank(xq, *self._search(xq, max(n_candidates, depth), options), depth)
        return D[:, :n_candidates], I[:, :n_candidates]

    def _search(self, xq: np.ndarray, n_candidates: int, options: QueryOptions) -> tuple[np.ndarray, np.ndarray]:
        if options.region:
            ids = self.region_ids(options.region)
            return self._search_region(xq, min(n_candidates, len(ids)), ids)
        if options.search.names_faiss:
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
        settings = self.settings_for(options)
        rerank = settings.rerank_depth
        # every prediction returned is re-ranked (k > R re-ranks k); the softmax tail beyond keeps
        # approximate scores: some mass there is closer to the truth than none
        D, I = self.search(xq, n_candidates, options, depth=max(rerank, options.k) if rerank else 0)
        points = None
        if settings.refine_starts:
            D, I, points = self.refine(xq, D, I, settings.refine_starts)
        pool = options if self.photos is None else replace(options, k=max(options.k, self.fusion.pool))
        results = [rank(D[i], I[i], pool, self.table, self.logit_scale, self.resolution,
                        None if points is None else points[i]) for i in range(len(xq))]
        if self.photos is not None:
            from geoindex.photos.evidence import with_photos

            results = with_photos(self, xq, results, options)
        return results

    def refine(self, xq: np.ndarray, D: np.ndarray, I: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Refine each query's ``m`` best candidates below the grid (:mod:`geoindex.locate.refine`):
        (D, I) with those re-scored at their refined points and re-sorted among themselves (the
        rest capped below them, as re-ranking does), and (n, c, 2) refined lat, lng (NaN where a
        candidate was not refined)."""
        m = min(m, I.shape[1])
        head = I[:, :m]
        valid = head >= 0
        starts = self._latlng_of(np.where(valid, head, head.max(initial=0)).ravel()).reshape(*head.shape, 2)
        pts, scores = self.refiner.refine(xq, starts, head, self.resolution)
        D, I, order = rescore_head(D, I, np.where(valid, scores, -np.inf))
        points = np.full(I.shape + (2,), np.nan)
        points[:, :m] = np.take_along_axis(np.where(valid[..., None], pts, np.nan), order[..., None], 1)
        return D, I, points
