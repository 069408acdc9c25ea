"""Exact re-ranking: score the best candidates against their freshly encoded cell centres.

Every gallery vector is the location encoder applied to its cell's centre, and the centre is
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
    the CPU (or on ``device``).
    """

    def __init__(self, latlng_of: Callable[[np.ndarray], np.ndarray], device: str | None = None, model=None):
        self.latlng_of = latlng_of
        self.device = device
        self._model = model
        self._lock = threading.Lock()

    @property
    def model(self):
        with self._lock:  # server threads may ask at once: load one copy
            if self._model is None:
                import torch

                from geoindex.encoders.location import load_location_encoder

                device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
                self._model = load_location_encoder(device)
        return self._model

    def rerank(self, xq: np.ndarray, D: np.ndarray, I: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, 512) float32 L2-normalised queries and FAISS's (n, c) D, I -> D, I with the first
        min(r, c) columns re-scored exactly and sorted best first, the rest capped just below the
        lowest of those (order kept); -1 ids stay at the end."""
        from geoindex.encoders.location import encode_latlng

        r = min(r, I.shape[1])
        if r == 0:
            return D, I
        head = I[:, :r]
        uniq, inverse = np.unique(head[head >= 0], return_inverse=True)
        if len(uniq) == 0:
            return D, I
        xb = encode_latlng(self.model, self.latlng_of(uniq))  # one batch for every query's candidates
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
    D[:, r:] = np.minimum(D[:, r:], np.nextafter(D[:, r - 1 : r], np.float32(-np.inf)))
    return D, I, order
