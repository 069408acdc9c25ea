"""One query plan per call: everything :meth:`Geolocator.locate` decides from the options alone.

The options a call brings (k, candidates, per-call search string, aggregation, confidence, region)
are checked against the index and merged over its stored search settings once, into a frozen
:class:`QueryPlan`; the search, re-ranking, refinement and ranking stages read the plan and decide
nothing again. The FAISS per-call parameters object and the region's id list are built here too.
Plans depend only on the options and the index, so the Geolocator keeps the last few (the server
answers the same options over and over).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from geoindex.index.search import SearchSettings
from geoindex.locate.options import QueryOptions


@dataclass(frozen=True)
class QueryPlan:
    """``settings``: the call's search settings laid over the index's. ``n_candidates``: cells
    searched and softmaxed (at least k, at most the index's size). ``depth``: candidates
    re-scored exactly (0: none; at least k when on, so every prediction returned is exact).
    ``refine``: best candidates refined below the grid (0: none). ``params``: FAISS per-call
    SearchParameters when the call names FAISS knobs, else None (the index's own apply).
    ``region_ids``: sorted ids inside the region filter, or None for no filter."""

    options: QueryOptions
    settings: SearchSettings
    n_candidates: int
    depth: int
    refine: int
    params: faiss.SearchParameters | None
    region_ids: np.ndarray | None

    @property
    def searched(self) -> int:
        """Candidates FAISS returns: enough for the softmax and for the re-ranking."""
        return max(self.n_candidates, self.depth)


def make_plan(options: QueryOptions, settings: SearchSettings, ntotal: int,
              params: faiss.SearchParameters | None, region_ids: np.ndarray | None) -> QueryPlan:
    """The plan of checked ``options`` over an index of ``ntotal`` vectors (see QueryPlan)."""
    n_candidates = min(max(options.k, options.candidates), ntotal)
    rerank = settings.rerank_depth
    # every prediction returned is re-ranked (k > R re-ranks k); the softmax tail beyond keeps
    # approximate scores: some mass there is closer to the truth than none
    depth = min(max(rerank, options.k), ntotal) if rerank else 0
    return QueryPlan(options, settings, n_candidates, depth, settings.refine_starts, params, region_ids)
