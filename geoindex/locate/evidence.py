"""Evidence beside the cells: the protocol through which a :class:`~geoindex.locate.geolocator.Geolocator`
takes plug-ins, and knows nothing else of them.

An evidence source (the reference photo gallery, :class:`geoindex.photos.PhotoEvidence`, is one)
is passed in as ``Geolocator(DIR, evidence=source)``. For each batch of queries the Geolocator ranks
``max(k, source.pool)`` cells, asks the source for each query's neighbours, and lets the source
fuse them into that query's result. ``locate`` never imports an implementation.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from geoindex.locate.options import LocateResult


@runtime_checkable
class EvidenceSource(Protocol):
    """A second gallery whose nearest items are fused with the ranked cells.

    Attributes:
        pool: cell predictions per query the fusion scores (the Geolocator ranks at least this many).
    """

    pool: int

    def neighbours(self, xq: np.ndarray, region=None) -> list[list]:
        """Each query's nearest items, best first (inside ``region``, a
        :class:`~geoindex.locate.regions.RegionFilter`, when given).

        Args:
            xq: (n, 512) float32 L2-normalised queries.
        """
        ...

    def fuse(self, result: LocateResult, neighbours: list, k: int, resolution: int | None) -> LocateResult:
        """One query's ranked cells (its ``pool`` best) and its neighbours -> the answer with ``k``
        predictions; ``resolution``: the H3 resolution answers are given at (None for a CSV gallery)."""
        ...
