"""How many vectors an index trains on: one rule for every gallery kind.

``TRAIN_PER_LIST`` vectors a k-means list, at least ``TRAIN_MIN`` (every vector below it), at most
the gallery and the kind's cap. The cell build caps at ``TRAIN_MAX`` (its k-means lists stop
gaining there); photo galleries are not capped (``bench_photos`` trained its 10M gallery's 4,096
lists on 262,144 photos, below any cap).
"""

from __future__ import annotations

TRAIN_MIN = 65_536
TRAIN_PER_LIST = 64
TRAIN_MAX = 300_000  # the cell build's cap


def train_size(n: int, kmeans_lists: int | None, cap: int | None = TRAIN_MAX) -> int:
    """Vectors to train on for ``n`` in the gallery and ``kmeans_lists`` k-means lists (None: no
    k-means lists, e.g. IVFH3 lists or a codec alone); ``cap``: at most this many (None: no cap)."""
    wanted = TRAIN_MIN if kmeans_lists is None else max(TRAIN_MIN, TRAIN_PER_LIST * kmeans_lists)
    return int(min(n, wanted) if cap is None else min(n, wanted, cap))
