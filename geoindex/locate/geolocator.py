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

from geoindex.cells.countries import stale_labels_note
from geoindex.cells.region import describe_region, points_inside, region_from_dict
from geoindex.encoders.location import location_weights_sha256
from geoindex.errors import InvalidArgumentError, InvalidQueryError
from geoindex.index.search import SearchSettings, apply_search_settings, per_call_params
from geoindex.locate.evidence import EvidenceSource
from geoindex.locate.joint import joint_options
from geoindex.locate.options import DEFAULT_CANDIDATES, LocateResult, QueryOptions, validate_embeddings
from geoindex.locate.plan import QueryPlan, make_plan
from geoindex.locate.ranking import rank
from geoindex.locate.refine import Refiner
from geoindex.locate.regions import RegionFilter, empty_countries_note, region_ids
from geoindex.locate.rerank import ExactReranker, StoreReranker, rescore_head
from geoindex.store.cell_table import load_cell_table
from geoindex.store.exact_store import open_store
from geoindex.store.integrity import check_index, check_table
from geoindex.store.manifest import SMALL_FILE_BYTES, open_index_dir, rebuild_hint
from geoindex.store.vectors import open_vectors

log = logging.getLogger(__name__)
_WARNED_LABELS: set[str] = set()


def warn_stale_labels(manifest: dict, path) -> None:
    """Log once per process and index that its stored labels follow an older rule."""
    note = stale_labels_note(manifest, path)
    if note and str(path) not in _WARNED_LABELS:
        _WARNED_LABELS.add(str(path))
        log.warning(note)

REGION_CACHE = 64
PLAN_CACHE = 64


class Geolocator:
    """An index directory opened for queries; :meth:`locate` is the hot path (no DuckDB round trip).

    Opening verifies the manifest and loads the FAISS index, the cell table's hot columns
    (memory-mapped) and, when the index has one, its exact store (memory-mapped). Safe to share
    between threads: per-call search settings never change the shared index.

    Attributes:
        dir: the verified index directory (:class:`~geoindex.store.manifest.IndexDir`).
        index: the FAISS index; ids are H3 cell ids (int64), or CSV row numbers.
        resolution: the H3 resolution of the gallery, or None for a CSV gallery.
        region: the region a regional build holds, or None for the whole globe.
    """

    def __init__(self, index_dir: str | Path, verify: str = "small", use_store: bool = True,
                 weights: str | Path | None = None, small_file_bytes: int = SMALL_FILE_BYTES,
                 evidence: EvidenceSource | None = None, *, photos=None, fusion=None):
        """Open and verify ``index_dir``.

        Args:
            index_dir: an index directory written by ``geoindex build``.
            verify: ``"small"`` (default: sizes, SHA-256 of every file up to ``small_file_bytes``,
                and the structural checks of :mod:`geoindex.store.integrity`), ``"size"``,
                ``"full"`` (SHA-256 of every file) or ``"none"`` (no checks at all); see
                :func:`~geoindex.store.manifest.open_index_dir`.
            use_store: re-rank from the index's exact store when it has one (False: with the
                encoder, as an index without a store does).
            weights: the GeoCLIP weights folder the index was built with (``--weights``; default
                the released weights): an index built with others is refused.
            small_file_bytes: the size up to which ``"small"`` checksums a file at open.
            evidence: a second gallery fused into each answer (:mod:`geoindex.locate.evidence`),
                e.g. reference photos: ``evidence=geoindex.photos.open_photos(REF)`` (docs/photos.md).
            photos, fusion: the older way to pass reference photos: refused with the new spelling.

        Raises:
            IndexDirError: the directory is missing, incomplete, altered, or holds another
                model's vectors; the message says what to do.
        """
        if photos is not None or fusion is not None:
            raise InvalidArgumentError(
                f"Geolocator(photos={photos!r}, fusion=...) is now Geolocator(evidence=open_photos({photos!r}, "
                "fusion=...)) with open_photos from geoindex.photos: locate takes evidence sources as plug-ins")
        self.dir = open_index_dir(index_dir, verify=verify, weights_sha256=location_weights_sha256(weights),
                                  small_file_bytes=small_file_bytes)
        self.index = open_vectors(self.dir.vectors_path, rebuild_hint(self.dir.path, self.dir.manifest))
        apply_search_settings(self.index, self.dir.search)
        self.table = load_cell_table(self.dir.cells_path)
        if verify != "none":
            check_table(self.dir, self.table)
            check_index(self.dir, self.index, self.table)
        self.logit_scale = float(math.exp(self.dir.logit_scale))
        self.resolution: int | None = self.dir.resolution
        self.known_countries = set(self.table.values["country"][1:])
        self.ivf = self.index if isinstance(self.index, faiss.IndexIVF) else None
        self._list_of_row: np.ndarray | None = None
        self._centroids: np.ndarray | None = None
        self._region_cache: dict[RegionFilter, np.ndarray] = {}
        self._plans: dict[QueryOptions, QueryPlan] = {}
        self.encoder_reranker = ExactReranker(self._latlng_of, weights=weights)
        self.store = open_store(self.dir.path, self.dir.store, len(self.table),
                                rebuild_hint(self.dir.path, self.dir.manifest)) if use_store else None
        self.reranker = self.encoder_reranker if self.store is None else StoreReranker(self.store, self.table.rows)
        self.refiner = Refiner(lambda: self.encoder_reranker.model)  # one encoder for both
        self.region = region_from_dict(self.dir.manifest["gallery"].get("region"))  # None: the whole globe
        if evidence is not None and not isinstance(evidence, EvidenceSource):
            raise InvalidArgumentError(f"evidence={evidence!r} is not an evidence source (pool, neighbours, fuse): "
                                       "pass e.g. geoindex.photos.open_photos(REF)")
        self.evidence = evidence
        warn_stale_labels(self.dir.manifest, self.dir.path)

    def covers(self, lat, lng) -> np.ndarray:
        """Which points lie in the region this index was built for.

        A photo taken outside still gets answers, all of them inside.

        Args:
            lat: latitude in degrees, a float or an (n,) array.
            lng: longitude in degrees, same shape as ``lat``.

        Returns:
            (n,) bool array; all True for a global index.
        """
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

    # -- the plan --------------------------------------------------------------------------------
    def plan(self, options: QueryOptions) -> QueryPlan:
        """Check ``options`` against this index and decide everything a call runs with, once
        (:mod:`geoindex.locate.plan`). InvalidQueryError names the bad option and the fix."""
        plan = self._plans.get(options)
        if plan is None:
            plan = self._make_plan(options)
            if len(self._plans) >= PLAN_CACHE:
                self._plans.pop(next(iter(self._plans)))
            self._plans[options] = plan
        return plan

    def check_options(self, options: QueryOptions) -> QueryPlan:
        """Fail fast on options this index cannot answer (before any model loads); the plan."""
        return self.plan(options)

    def _make_plan(self, options: QueryOptions) -> QueryPlan:
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
        settings = self.settings_for(options)
        if settings.refine_starts and self.resolution is None and self.refiner.settings.method == "descent":
            raise InvalidQueryError("refine descends H3 cells: this index holds CSV rows; use "
                                    "Refiner(RefineSettings(method='newton')) or leave refine off")
        params = per_call_params(self.index, options.search) if options.search.names_faiss else None
        region_ids = self.region_ids(options.region) if options.region else None
        if region_ids is not None and len(region_ids) == 0:
            within = f" (it was built for {describe_region(self.region)} only)" if self.region else ""
            raise InvalidQueryError(f"the region filter matches no cells in this index{within}: widen it")
        return make_plan(options, settings, self.ntotal, params, region_ids)

    # -- search ---------------------------------------------------------------------------------
    def settings_for(self, options: QueryOptions) -> SearchSettings:
        """The settings a call runs with: its own laid over the index's default."""
        return options.search.over(self.dir.search)

    def search(self, xq: np.ndarray, n_candidates: int, options: QueryOptions,
               depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Nearest cells of normalised queries, best first, before any softmax.

        Region-restricted when ``options.region`` is set (the true top-k inside the region). The
        best ``depth`` candidates are re-scored exactly and sorted; later ones keep their
        approximate scores (which run low: codes lose energy).

        Args:
            xq: (n, 512) float32 L2-normalised query embeddings.
            n_candidates: cells to return per query.
            options: the call's settings (``search``, ``region``), checked against this index
                through its plan (:meth:`plan`).
            depth: candidates to re-score exactly; default the call's ``rerank`` R (0: none).

        Returns:
            ``(D, I)``: (n, n_candidates) float32 cosine scores and int64 cell ids, best first
            (id -1, FAISS's convention, where fewer cells exist).
        """
        plan = self.plan(options)
        depth = min(plan.settings.rerank_depth if depth is None else depth, self.ntotal)
        return self._search_plan(xq, n_candidates, depth, plan)

    def _search_plan(self, xq: np.ndarray, n_candidates: int, depth: int,
                     plan: QueryPlan) -> tuple[np.ndarray, np.ndarray]:
        if not depth:
            return self._search(xq, n_candidates, plan)
        D, I = self.reranker.rerank(xq, *self._search(xq, max(n_candidates, depth), plan), depth)
        return D[:, :n_candidates], I[:, :n_candidates]

    def _search(self, xq: np.ndarray, n_candidates: int, plan: QueryPlan) -> tuple[np.ndarray, np.ndarray]:
        if plan.region_ids is not None:
            return self._search_region(xq, min(n_candidates, len(plan.region_ids)), plan.region_ids)
        if plan.params is not None:
            # A SearchParameters object, not a change to the shared index: safe across threads.
            return self.index.search(xq, n_candidates, params=plan.params)
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
        """Where were these embeddings taken? The ranked cells of each query.

        Args:
            xq: (n, 512) GeoCLIP embeddings (images, texts or locations), any float dtype or
                nested lists; rows are L2-normalised here.
            options: what to answer (k, candidates, search settings, region, aggregation,
                confidence); default ``QueryOptions()``.

        Returns:
            n :class:`~geoindex.locate.options.LocateResult`, in query order, each with its
            predictions best first.

        Raises:
            InvalidQueryError: a bad embedding (wrong shape, NaN, infinity, all zeros) or option
                (k outside 1..ntotal, a region with no cells here, ...); the message names it.
        """
        xq, options = joint_options(xq, options or QueryOptions())  # several photos of one place: one query
        plan = self.plan(options)
        xq = validate_embeddings(xq)
        D, I = self._search_plan(xq, plan.n_candidates, plan.depth, plan)
        points = None
        if plan.refine:
            D, I, points = self.refine(xq, D, I, plan.refine)
        options = plan.options
        evidence = self.evidence
        pool = options if evidence is None else replace(options, k=max(options.k, evidence.pool))
        results = [rank(D[i], I[i], pool, self.table, self.logit_scale * options.joint_scale, self.resolution,
                        None if points is None else points[i]) for i in range(len(xq))]
        if evidence is not None:
            resolution = self.resolution if options.aggregate_res is None else options.aggregate_res
            found = evidence.neighbours(xq, options.region or None)
            results = [evidence.fuse(r, n, options.k, resolution) for r, n in zip(results, found)]
        if note := empty_countries_note(options.region, self.known_countries):
            for r in results:
                r.warnings = [*(r.warnings or []), note]
        return results

    def refine(self, xq: np.ndarray, D: np.ndarray, I: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Refine each query's ``m`` best candidates below the grid (:mod:`geoindex.locate.refine`).

        Args:
            xq: (n, 512) float32 L2-normalised queries.
            D: (n, c) float32 scores from :meth:`search`, best first.
            I: (n, c) int64 cell ids from :meth:`search`.
            m: candidates to refine per query (capped at c).

        Returns:
            ``(D, I, points)``: D and I with the ``m`` best re-scored at their refined points and
            re-sorted among themselves (the rest capped below them, as re-ranking does), and
            (n, c, 2) float64 refined lat, lng in degrees (NaN where a candidate was not refined).
        """
        m = min(m, I.shape[1])
        head = I[:, :m]
        valid = head >= 0
        starts = self._latlng_of(np.where(valid, head, head.max(initial=0)).ravel()).reshape(*head.shape, 2)
        pts, scores = self.refiner.refine(xq, starts, head, self.resolution)
        D, I, order = rescore_head(D, I, np.where(valid, scores, -np.inf))
        points = np.full(I.shape + (2,), np.nan)
        points[:, :m] = np.take_along_axis(np.where(valid[..., None], pts, np.nan), order[..., None], 1)
        return D, I, points
