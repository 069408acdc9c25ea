"""Exact re-ranking: score the best candidates against their exact vectors.

Two sources of exact vectors. With an exact store in the index directory
(:mod:`geoindex.store.exact_store`, ``build_index --store fp16``), :class:`StoreReranker` reads the
candidates' rows from a memory-mapped file: a few KB a query, no encoder (res 6, PQ32x4fs + R=64:
see the README's compact-index table). Without one, :class:`ExactReranker` re-encodes them. Every gallery vector is the location encoder applied to its cell's centre, and the centre is
in the cell table. So the exact score of a candidate needs no stored bytes, only one encoder
pass (~19 MFLOP a point: three 512-1024-1024-1024-512 MLPs). A compact index (PQ codes of
<= 128 B) finds the neighbourhood; re-ranking its top R candidates exactly recovers the order
that its codes lost. The cost is R encoder passes per query: ~0.15 ms of one CPU core each
(benchmarks/bench_recall.py, res 6: PQ64 + rerank=32 answers in ~5 ms); on CUDA, when torch
sees a GPU, far less (not measured: no GPU on this project's machines).

Search strings carry it beside FAISS's own parameters: ``"nprobe=16,rerank=32"``
(:class:`geoindex.index.search.SearchSettings`). Semantics follow FAISS's refine indexes: the R
best approximate candidates are re-scored with their exact cosine and sorted; candidates after
the first R keep their approximate order and scores, capped just below the lowest exact score of
the first R (so they never outrank a re-scored one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np


class ExactReranker:
    """Re-scores candidates with the pretrained location encoder.

    ``latlng_of``: (m,) int64 ids -> (m, 2) float64 lat, lng degrees of the points the index
    encoded (the cell table's centres). ``model``: a loaded LocationEncoder to use; when None the
    pretrained one loads on first use (38 MB of weights), on CUDA when torch sees one, else on
    the CPU (or on ``device``); ``weights``: a weights folder to load instead of the released one.
    """

    def __init__(self, latlng_of: Callable[[np.ndarray], np.ndarray], device: str | None = None, model=None,
                 weights=None):
        self.latlng_of = latlng_of
        self.device = device
        self.weights = weights  # a GeoCLIP weights folder; None: the released weights
        self._model = model
        self._lock = threading.Lock()
        self._batches = Coalescer(self._encode)

    @property
    def model(self):
        with self._lock:  # server threads may ask at once: load one copy
            if self._model is None:
                import torch

                from geoindex.encoders.location import load_location_encoder

                device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
                self._model = load_location_encoder(device, weights=self.weights)
        return self._model

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """(m,) distinct ids -> (m, 512) float32: their cell centres, encoded now; the ids of
        concurrent callers (server threads) are encoded in one batch (:class:`Coalescer`)."""
        return self._batches(ids)

    def _encode(self, ids: np.ndarray) -> np.ndarray:
        from geoindex.encoders.location import encode_latlng

        return encode_latlng(self.model, self.latlng_of(ids))

    def rerank(self, xq: np.ndarray, D: np.ndarray, I: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, 512) float32 L2-normalised queries and FAISS's (n, c) D, I -> D, I with the first
        min(r, c) columns re-scored exactly and sorted best first, the rest capped just below the
        lowest of those (order kept); -1 ids stay at the end."""
        return rerank_with(self.vectors, xq, D, I, r)


class StoreReranker:
    """Re-scores candidates with their vectors read from the index's exact store
    (:mod:`geoindex.store.exact_store`, memory-mapped): no encoder, a few KB read per query.
    ``rows_of``: (m,) ids -> (m,) store rows (the cell table's ``rows``)."""

    def __init__(self, store, rows_of: Callable[[np.ndarray], np.ndarray]):
        self.store = store
        self.rows_of = rows_of

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return self.store.vectors(self.rows_of(ids))

    def scores(self, ids: np.ndarray, q: np.ndarray) -> np.ndarray:
        return self.store.scores(self.rows_of(ids), q)

    def rerank(self, xq: np.ndarray, D: np.ndarray, I: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`ExactReranker.rerank`, with the stored vectors, scored a query at a time
        (:meth:`ExactStore.scores`: no decoding to float32)."""
        return rerank_with(self.vectors, xq, D, I, r, scores_of=self.scores)


class Coalescer:
    """Concurrent calls of ``fn`` on id arrays become one call on their union.

    One query's re-ranking encodes a few dozen points, and that costs about what a few hundred
    cost: the encoder's 38 MB of weights stream through the cache either way. So when server
    threads re-rank at once, the first runs ``fn`` and the ones arriving meanwhile queue; when it
    finishes, one of them runs ``fn`` once for every queued caller and hands each its rows.
    Alone, a call runs ``fn`` directly, with no wait.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]):
        self.fn = fn
        self._lock = threading.Lock()
        self._queue: list[_Call] = []
        self._busy = False
        self.calls = 0  # fn calls, and the callers they served: the batching a server got
        self.callers = 0

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        me = _Call(np.asarray(ids, dtype=np.int64))
        with self._lock:
            self._queue.append(me)
            lead = not self._busy
            self._busy = True
        if not lead:
            me.done.wait()
            if not me.lead:  # served by another thread's batch
                return me.result()
        self._run()
        return me.result()

    def _run(self) -> None:
        """Serve everything queued in one fn call; then pass the lead to a caller queued meanwhile."""
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            uniq, inverse = np.unique(np.concatenate([c.ids for c in batch]), return_inverse=True)
            out = self.fn(uniq)
            start = 0
            for c in batch:
                c.rows = out[inverse[start : start + len(c.ids)]]
                start += len(c.ids)
        except BaseException as e:  # every caller of the batch sees the error; the next batch runs
            for c in batch:
                c.error = e
        self.calls += 1
        self.callers += len(batch)
        with self._lock:
            successor = self._queue[0] if self._queue else None
            self._busy = successor is not None
        for c in batch:
            c.done.set()
        if successor is not None:
            successor.lead = True
            successor.done.set()


class _Call:
    __slots__ = ("ids", "done", "lead", "rows", "error")

    def __init__(self, ids: np.ndarray):
        self.ids = ids
        self.done = threading.Event()
        self.lead = False
        self.rows: np.ndarray | None = None
        self.error: BaseException | None = None

    def result(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        return self.rows


def rerank_with(vectors_of: Callable[[np.ndarray], np.ndarray], xq: np.ndarray, D: np.ndarray, I: np.ndarray,
                r: int, scores_of: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Re-score the first min(r, c) columns of (D, I) with ``vectors_of(distinct ids)``: one call
    for every query's candidates; or, given ``scores_of(ids, query) -> (m,) scores``, one call a query."""
    r = min(r, I.shape[1])
    if r == 0:
        return D, I
    head = I[:, :r]
    if scores_of is not None:
        exact = np.full(head.shape, -np.inf, dtype=np.float32)
        for q in range(len(head)):
            valid = head[q] >= 0
            if valid.any():
                exact[q, valid] = scores_of(head[q, valid], xq[q])
        return rescore_head(D, I, exact)[:2]
    if len(head) == 1:  # one query (a server's usual call): its ids are distinct, no merging needed
        valid = head[0] >= 0
        exact = np.full(head.shape, -np.inf, dtype=np.float32)
        if valid.any():
            exact[0, valid] = vectors_of(head[0, valid]) @ xq[0]
        return rescore_head(D, I, exact)[:2]
    uniq, inverse = np.unique(head[head >= 0], return_inverse=True)
    if len(uniq) == 0:
        return D, I
    xb = vectors_of(uniq)
    exact = np.full(head.shape, -np.inf, dtype=np.float32)
    rows, cols = np.nonzero(head >= 0)
    exact[rows, cols] = np.einsum("ij,ij->i", xq[rows], xb[inverse])
    D, I, _ = rescore_head(D, I, exact)
    return D, I


def rescore_head(D: np.ndarray, I: np.ndarray, exact: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, c) D, I and (n, r) new scores of their first r columns (-inf where the id is -1) -> D, I
    with those r sorted best first by the new scores and the rest capped just below the lowest of
    them, and the (n, r) order applied to the head. Shared by re-ranking and refinement."""
    r = exact.shape[1]
    head = I[:, :r]
    order = np.argsort(-exact, axis=1, kind="stable")
    D, I = D.copy(), I.copy()
    D[:, :r] = np.take_along_axis(np.where(head >= 0, exact, D[:, :r]), order, 1)
    I[:, :r] = np.take_along_axis(head, order, 1)
    # a candidate ranked below the head never outranks (nor ties) it: scores reaching the head's
    # lowest new score are capped just below it, so D stays sorted
    with np.errstate(over="ignore"):  # a head ending in -inf (fewer candidates than r) stays -inf
        D[:, r:] = np.minimum(D[:, r:], np.nextafter(D[:, r - 1 : r], np.float32(-np.inf)))
    return D, I, order
