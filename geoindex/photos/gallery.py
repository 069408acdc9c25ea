"""An opened reference gallery: the nearest reference photos of (n, 512) query embeddings.

``PhotoGallery(REF)`` verifies the manifest, loads the FAISS index and the hot columns of
``photos.duckdb`` (lat, lng, H3 cell, country code: 26 B a photo; image paths and metadata are read per
answer), and :meth:`PhotoGallery.search` returns each query's k nearest photos by cosine similarity,
re-scored exactly from the fp16 store when the index is compressed. A region filter keeps only
photos inside it, by the rule cells follow: the country whose admin-0 polygon holds it, bounding boxes, and H3
ancestry (a photo is inside an H3 filter cell when its res-15 cell descends from it); a filtered
search scans every list, so its answer is the exact top-k of the filtered set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from geoindex.cells.region import RegionFilter, cells_inside
from geoindex.errors import IndexDirError
from geoindex.index.search import SearchSettings, apply_search_settings
from geoindex.photos.layout import PHOTOS_DB, VECTORS, open_reference_dir
from geoindex.store.exact_store import open_store
from geoindex.store.integrity import check_lists
from geoindex.store.manifest import SMALL_FILE_BYTES
from geoindex.store.vectors import open_vectors

REGION_CACHE = 64


@dataclass(frozen=True)
class PhotoRecord:
    """One reference photo as an answer shows it."""

    id: int
    image: str  # the path as the CSV wrote it
    path: str  # resolved at build time
    lat: float
    lng: float
    metadata: dict
    place: str | None = None
    admin1: str | None = None
    country: str | None = None


def _db_error(db: Path, e: Exception, hint: str) -> IndexDirError:
    """One line for a photos.duckdb that does not open or read (a damaged block, permissions)."""
    import os

    if not os.access(db, os.R_OK):
        return IndexDirError(f"{db} cannot be read (permission denied): give this user read access (chmod a+r) "
                             "or run as its owner")
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return IndexDirError(f"{db} is not a readable DuckDB file (DuckDB says: {first}): the file is damaged; {hint}")


class PhotoGallery:
    """An opened, verified reference gallery. ``verify`` and ``small_file_bytes`` as
    :func:`~geoindex.photos.layout.open_reference_dir`; unless ``verify="none"``, the structure is
    checked too: photos.duckdb opens and holds the manifest's photo count with ids 0..n-1 and
    coordinates in range, the FAISS index holds as many vectors, and its inverted lists (sampled)
    hold only those ids. ``path``, ``manifest`` and ``hint`` (the rebuild command) are what the
    server's background check needs (:class:`geoindex.serve.integrity.BackgroundVerifier`)."""

    def __init__(self, path: str | Path, verify: str = "size", small_file_bytes: int = SMALL_FILE_BYTES):
        self.dir = open_reference_dir(path, verify, small_file_bytes)
        self.path, self.manifest, self.hint = self.dir.path, self.dir.manifest, self.dir.hint
        self.index = open_vectors(self.path / VECTORS, self.hint)
        self.search_settings = SearchSettings.parse(self.manifest["index"].get("search"))
        apply_search_settings(self.index, self.search_settings)
        self.ivf = faiss.try_extract_index_ivf(self.index)
        cols = self._hot_columns()
        self.lat = np.asarray(cols["lat"], np.float64)
        self.lng = np.asarray(cols["lng"], np.float64)
        self.cell = np.asarray(cols["cell"], np.int64)
        self.country_code = np.asarray(cols["code"], np.int16)
        if verify != "none":
            self._check(np.asarray(cols["id"], np.int64))
        self.store = open_store(self.path, self.manifest.get("store"), len(self.lat), self.hint)
        self._regions: dict[RegionFilter, np.ndarray] = {}

    def _hot_columns(self) -> dict:
        import duckdb

        db = self.path / PHOTOS_DB
        try:
            con = duckdb.connect(str(db), read_only=True)
            try:  # countries as small codes (1-based positions in self.countries, 0 = none), not 10M strings
                self.countries = [r[0] for r in con.execute("SELECT DISTINCT country FROM photos WHERE country IS NOT "
                                                            "NULL ORDER BY country").fetchall()]
                return con.execute("SELECT id, lat, lng, cell, coalesce(list_position(?, country), 0)::SMALLINT AS code "
                                   "FROM photos ORDER BY id", [self.countries]).fetchnumpy()
            finally:
                con.close()
        except (duckdb.Error, OSError) as e:
            raise _db_error(db, e, self.hint) from e

    def _corrupt(self, name: str, what: str) -> IndexDirError:
        return IndexDirError(f"{self.path / name} is corrupt ({what}): {self.hint}")

    def _check(self, ids: np.ndarray) -> None:
        n, photos, ntotal = len(ids), self.manifest.get("photos"), int(self.index.ntotal)
        if n != photos:
            raise self._corrupt(PHOTOS_DB, f"{n:,} photos, the manifest says {photos}")
        if not np.array_equal(ids, np.arange(n)):
            raise self._corrupt(PHOTOS_DB, f"its photo ids are not 0..{n - 1}")
        if not (np.all(np.abs(self.lat) <= 90) and np.all(np.abs(self.lng) <= 180)):  # NaN fails too
            raise self._corrupt(PHOTOS_DB, "a lat or lng outside [-90, 90] x [-180, 180]")
        if ntotal != n:
            raise self._corrupt(VECTORS, f"ntotal {ntotal:,}, {PHOTOS_DB} holds {n:,} photos")
        problem = check_lists(self.index, lambda i: (i >= 0) & (i < n), PHOTOS_DB)
        if problem:
            lists = "lists.ivfdata" if (self.path / "lists.ivfdata").is_file() and not problem.startswith("its") \
                else VECTORS
            raise self._corrupt(lists, problem)

    def __len__(self) -> int:
        return len(self.lat)

    @property
    def encoder(self) -> dict:
        """What the photos were encoded with: clip_model, clip_checkpoint, weights checksums."""
        return self.manifest["encoder"]

    def check_encoder(self, clip_model: str | None, image_head_sha256: str | None,
                      location_weights_sha256: str | None) -> None:
        """Refuse a query encoder other than the one the gallery was built with (the vectors of two
        backbones or heads are not comparable). None skips a check (embeddings given as numbers)."""
        built = self.encoder
        fix = (f"query with --clip-model {built['clip_model']} and the weights it was built with ({built['weights_source']}), "
               f"or rebuild it: `geoindex build --photos {self.manifest['csv']['path']} --out {self.path} --overwrite` "
               "with this query's --clip-model/--weights")
        if clip_model is not None and clip_model != built["clip_model"]:
            raise IndexDirError(f"reference photos {str(self.path)!r} were encoded with CLIP {built['clip_model']}, "
                                f"the query with {clip_model}: {fix}")
        for name, have in (("image_head_sha256", image_head_sha256), ("location_weights_sha256", location_weights_sha256)):
            if have is not None and have != built[name]:
                raise IndexDirError(f"reference photos {str(self.path)!r} were encoded with other GeoCLIP weights "
                                    f"({name} {built[name][:12]}..., the query's {have[:12]}...): {fix}")

    def region_ids(self, region: RegionFilter) -> np.ndarray:
        """Sorted ids of the photos inside ``region`` (cached for the last REGION_CACHE filters)."""
        ids = self._regions.get(region)
        if ids is None:
            keep = cells_inside(replace(region, countries=()), self.cell, self.lat, self.lng)
            if region.countries:
                keep &= np.isin(self.country_code, [self.countries.index(c) + 1 for c in region.countries
                                                    if c in self.countries])
            ids = np.flatnonzero(keep).astype(np.int64)
            if len(self._regions) >= REGION_CACHE:
                self._regions.pop(next(iter(self._regions)))
            self._regions[region] = ids
        return ids

    def search(self, xq: np.ndarray, k: int, region: RegionFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(n, 512) float32 L2-normalised queries -> (D, I) (n, k) cosine similarities and photo ids,
        best first; -1 ids (and -inf) where fewer than k photos qualify."""
        depth = self.search_settings.rerank_depth if self.store is not None else 0
        want = min(max(k, depth), len(self))
        params = None
        if region:
            ids = self.region_ids(region)
            want = min(want, len(ids))
            if want == 0:
                return np.full((len(xq), k), -np.inf, np.float32), np.full((len(xq), k), -1, np.int64)
            params = faiss.SearchParametersIVF() if self.ivf is not None else faiss.SearchParameters()
            params.sel = faiss.IDSelectorBatch(ids)
            if self.ivf is not None:
                params.nprobe = self.ivf.nlist  # every list: the exact top-k of the filtered set
        D, I = search_reranked(self.index, self.store if depth else None, xq, want, params)
        D, I = D[:, :k], I[:, :k]
        if D.shape[1] < k:
            pad = k - D.shape[1]
            D = np.pad(D, ((0, 0), (0, pad)), constant_values=-np.inf)
            I = np.pad(I, ((0, 0), (0, pad)), constant_values=-1)
        return D, I

    def records(self, ids: np.ndarray) -> list[PhotoRecord]:
        """Photo ids -> their records (one DuckDB query)."""
        import duckdb

        ids = [int(i) for i in ids if i >= 0]
        if not ids:
            return []
        try:
            con = duckdb.connect(str(self.path / PHOTOS_DB), read_only=True)
            try:
                rows = con.execute("SELECT id, image, path, lat, lng, metadata, place, admin1, country FROM photos "
                                   f"WHERE id IN ({', '.join('?' for _ in ids)})", ids).fetchall()
            finally:
                con.close()
        except (duckdb.Error, OSError) as e:  # a block damaged after the open: one line, not a traceback
            raise _db_error(self.path / PHOTOS_DB, e, self.hint) from e
        by_id = {r[0]: PhotoRecord(*r[:5], json.loads(r[5]), *r[6:]) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def summary(self) -> dict:
        m = self.manifest
        return {"path": str(self.path), "photos": m["photos"], "skipped": m["skipped"], "factory": m["index"]["factory"],
                "search": m["index"]["search"], "encoder": m["encoder"], "created": m["created"]}


def search_reranked(index: faiss.Index, store, xq: np.ndarray, want: int,
                    params: faiss.SearchParameters | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, 512) float32 queries -> (D, I) (n, want): FAISS's ``want`` best photos, every one re-scored
    exactly from the fp16 ``store`` (an :class:`~geoindex.store.exact_store.ExactStore`; None: FAISS's
    scores) and sorted best first. How a gallery is searched: by readers and by the build's self-check."""
    D, I = index.search(xq, want, params=params)
    if store is None:
        return D, I
    D = np.full(I.shape, -np.inf, np.float32)
    for q in range(len(xq)):
        ok = I[q] >= 0
        D[q, ok] = store.scores(I[q, ok], xq[q])  # fp16 scored without decoding
    order = np.argsort(-D, axis=1, kind="stable")
    return np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
