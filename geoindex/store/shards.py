"""Finished shards of a build: encoded vectors plus metadata, one ``.npz`` per shard.

Vectors are spilled in the build's spill dtype: float32, or float16 when the index keeps an fp16
exact store anyway (half the disk: 30 GB instead of 59 GB for res 7's 29M land cells). Readers get
float32 either way.

A shard file is written to a temporary name and renamed into place (:mod:`geoindex.atomic`), so a file that exists is
complete: a killed build resumes from exactly the shards it finished. Strings are stored as
fixed-width unicode, never pickled.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoindex.atomic import atomic_path
from geoindex.constants import EMBED_DIM

SHARD_DISK_FULL_FIX = ("free space on that disk and run the same command again: the finished shards are kept "
                       "and resumed from")


@dataclass(frozen=True)
class ShardFile:
    key: str
    path: Path

    def exists(self) -> bool:
        return self.path.is_file()

    def write(self, vectors: np.ndarray, meta: dict[str, np.ndarray]) -> None:
        with atomic_path(self.path, durable=True, fix=SHARD_DISK_FULL_FIX) as tmp, open(tmp, "wb") as f:
            np.savez(f, vectors=vectors, **meta)

    def read(self, *names: str) -> dict[str, np.ndarray]:
        """Load the named arrays (all when none named)."""
        with np.load(self.path, allow_pickle=False) as f:
            return {name: f[name] for name in (names or f.files)}

    def count(self) -> int:
        return len(self.read("cell")["cell"])


def shard_files(folder: Path, keys: list[str]) -> list[ShardFile]:
    folder.mkdir(parents=True, exist_ok=True)
    return [ShardFile(key, folder / f"{key}.npz") for key in keys]


def iter_vectors(shards: list[ShardFile], as_spilled: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(cell ids (n,) int64, vectors (n, 512) float32) per non-empty shard, in shard order;
    ``as_spilled``: the vectors in the dtype they were spilled in (half the bytes to ship)."""
    for shard in shards:
        data = shard.read("cell", "vectors")
        if len(data["cell"]):
            yield data["cell"], data["vectors"] if as_spilled else data["vectors"].astype(np.float32, copy=False)


def sample_vectors(shards: list[ShardFile], counts: list[int], size: int, seed: int) -> np.ndarray:
    """A seeded, order-independent sample of ``size`` gallery vectors."""
    n = sum(counts)
    picks = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    out = np.empty((size, EMBED_DIM), dtype=np.float32)
    start, filled = 0, 0
    for shard, count in zip(shards, counts):
        lo, hi = np.searchsorted(picks, [start, start + count])
        if hi > lo:
            xb = shard.read("vectors")["vectors"]
            out[filled : filled + hi - lo] = xb[picks[lo:hi] - start]
            filled += hi - lo
        start += count
    return out
