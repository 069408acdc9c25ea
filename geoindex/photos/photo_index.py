"""The reference gallery's index: which FAISS factory, what it costs resident, and every refusal
that needs only the arguments (and the CSV's row count), made before any photo is read.

The default rule (:func:`choose_factory`): ``Flat`` up to :data:`FLAT_MAX` photos (exact, 2 KB a
photo), above it IVF with an HNSW coarse quantizer, ~sqrt(n) lists and PQ32 codes, re-ranked from the
fp16 exact store on disk (``benchmarks/bench_photos.py`` measured it). ``--max-memory`` takes the
first of :data:`OPTIONS` allowed for the gallery whose predicted resident bytes fit (:func:`predict_resident`,
from the per-vector figures of :data:`COSTS`); the first option is always the default rule's.
Resident means the serialised index a reader holds in RAM (codes, ids, coarse quantizer, codec
tables): the exact store (1,024 B a photo) is memory-mapped from disk and not counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import faiss
import numpy as np

from geoindex.errors import InvalidArgumentError
from geoindex.index.search import SearchSettings, apply_search_settings

DIM = 512
FLAT_MAX = 200_000  # Flat: 2 KB a photo resident, exact; above, IVF + PQ32 + exact store (bench_photos)
COMPRESSED_SEARCH = "nprobe=32,rerank=400"  # bench_photos, 1M: the best recall within 5 ms (0.73)
PQ_MIN_PHOTOS = 256  # 8-bit PQ trains 256 centroids per sub-vector: fewer photos cannot train it
LISTS_IN_MEMORY_SHARE = 0.5  # auto: lists go to disk when they would take over half of this machine's memory


@dataclass(frozen=True)
class Cost:
    """Resident bytes of a factory: ``per_vector`` (codes + 8-byte ids; Flat's ids are implicit),
    ``per_list`` (a coarse centroid, 2,048 B, its HNSW32 graph node, ~270 B, and the list's header),
    ``fixed`` (codec tables and headers)."""

    per_vector: int
    per_list: int
    fixed: int


# Serialised sizes measured with FAISS 1.x on 512-d vectors (IVF64/IVF128_HNSW32 at 20K vectors:
# 40.03, 24.03, 16.03 B a vector for PQ32/16/8; 2,318 B a list; 524,649 B fixed), rounded up.
COSTS: dict[str, Cost] = {
    "Flat": Cost(per_vector=2048, per_list=0, fixed=1024),
    "PQ32": Cost(per_vector=32 + 8, per_list=2400, fixed=256 * DIM * 4 + 4096),
    "PQ16": Cost(per_vector=16 + 8, per_list=2400, fixed=256 * DIM * 4 + 4096),
    "PQ8": Cost(per_vector=8 + 8, per_list=2400, fixed=256 * DIM * 4 + 4096),
}

# --max-memory's candidates, preferred first ({nlist}: :func:`nlist_for`); the first one allowed for
# the gallery is the default rule's choice. PQ16 and PQ8 are smaller, unmeasured fallbacks.
OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("Flat", "Flat", ""),
    ("PQ32", "IVF{nlist}_HNSW32,PQ32", COMPRESSED_SEARCH),
    ("PQ16", "IVF{nlist}_HNSW32,PQ16", COMPRESSED_SEARCH),
    ("PQ8", "IVF{nlist}_HNSW32,PQ8", COMPRESSED_SEARCH),
)


def nlist_for(n: int) -> int:
    """IVF lists for ``n`` photos: the power of two nearest sqrt(n)."""
    return int(2 ** round(np.log2(max(np.sqrt(n), 1))))


def _allowed(cost: str, n: int) -> bool:
    return n <= FLAT_MAX if cost == "Flat" else n >= PQ_MIN_PHOTOS


def choose_factory(n: int) -> tuple[str, str]:
    """(factory, search) the measured rule picks for ``n`` photos."""
    if n <= FLAT_MAX:
        return "Flat", ""
    return f"IVF{nlist_for(n)}_HNSW32,PQ32", COMPRESSED_SEARCH


def predict_resident(cost: str, n: int) -> int:
    """Bytes the index of :data:`COSTS` entry ``cost`` takes resident for ``n`` photos."""
    c = COSTS[cost]
    return c.fixed + n * c.per_vector + (0 if cost == "Flat" else nlist_for(n) * c.per_list)


@dataclass(frozen=True)
class BudgetChoice:
    """What ``--max-memory`` picked: the :data:`COSTS` entry, its factory pattern and search."""

    max_memory: int
    cost: str
    pattern: str
    search: str

    def factory(self, n: int) -> str:
        return self.pattern.format(nlist=nlist_for(n))

    def to_dict(self, n: int) -> dict:
        return {"max_memory": self.max_memory, "factory": self.factory(n), "search": self.search,
                "predicted_resident_bytes": predict_resident(self.cost, n), "costs": vars(COSTS[self.cost])}


def choose_for_budget(max_memory: int, n: int) -> BudgetChoice:
    """The first option allowed for ``n`` photos whose predicted resident bytes fit ``max_memory``;
    InvalidArgumentError naming the smallest budget that fits when none does."""
    allowed = [(cost, pattern, search) for cost, pattern, search in OPTIONS if _allowed(cost, n)]
    for cost, pattern, search in allowed:
        if predict_resident(cost, n) <= max_memory:
            return BudgetChoice(max_memory, cost, pattern, search)
    need, cost, pattern = min((predict_resident(c, n), c, p) for c, p, _ in allowed)
    raise InvalidArgumentError(
        f"--max-memory {max_memory:,} B ({max_memory / 1e6:.2f} MB) fits no photo index for {n:,} photos: the "
        f"smallest, {pattern.format(nlist=nlist_for(n))}, needs {need:,} B resident; give --max-memory "
        f"{-(-need // 1000) / 1000:.3f}MB or more")


def probe(factory: str) -> faiss.Index:
    """An empty index of ``factory`` (what kind it is); InvalidArgumentError for a bad string."""
    try:
        return faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise InvalidArgumentError(f"--factory {factory!r} is not a FAISS factory string ({e}): use auto, Flat or "
                                   "e.g. IVF1024,PQ32") from e


def lists_mappable(index: faiss.Index) -> bool:
    """Whether ``index`` is an IVF index whose inverted lists can live in ``lists.ivfdata``."""
    return isinstance(index, faiss.IndexIVF) and "FastScan" not in type(index).__name__


def unmappable_error(factory: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"--lists-on-disk needs an IVF index whose lists FAISS can map from disk, and {factory} has none (Flat, "
        "HNSW) or packs them for SIMD (PQ..x4fs): drop --lists-on-disk, or give e.g. --factory IVF1024,PQ32")


def check_index_args(factory: str, search: SearchSettings | None, lists_on_disk: bool | None,
                     max_memory: int | None) -> None:
    """The refusals that need only the arguments (before the CSV is read)."""
    if max_memory is not None and (factory != "auto" or search is not None):
        raise InvalidArgumentError(
            f"--max-memory picks the factory and search settings itself: drop --factory {factory!r}"
            f"{'' if search is None else f' and --search {str(search)!r}'}, or drop --max-memory")
    if factory == "auto":
        return
    index = probe(factory)
    check_search(factory, index, search)
    if lists_on_disk and not lists_mappable(index):
        raise unmappable_error(factory)


def check_search(factory: str, index: faiss.Index, search: SearchSettings | None) -> None:
    """Refuse search settings the index cannot take; an exact Flat index takes none."""
    if search is None:
        return
    if isinstance(index, faiss.IndexFlat):
        raise InvalidArgumentError(
            f"--search {str(search)!r} needs a compressed index, and {factory} is exact (no lists to probe, nothing "
            "to re-rank): drop --search, or give a compressed --factory such as IVF1024,PQ32")
    apply_search_settings(index, search)


def check_for_rows(factory: str, search: SearchSettings | None, lists_on_disk: bool | None, n_rows: int) -> None:
    """The refusals of ``--factory auto`` once the CSV's row count (an upper bound of the photos) is known."""
    if factory != "auto":
        return
    chosen = choose_factory(n_rows)[0]
    index, shown = probe(chosen), f"{chosen} (auto for {n_rows:,} photos)"
    check_search(shown, index, search)
    if lists_on_disk and not lists_mappable(index):
        raise unmappable_error(shown)


def lists_on_disk(asked: bool | None, index: faiss.Index, n: int) -> bool:
    """As asked, else (None) when an IVF index's codes and ids would take over half this machine's memory."""
    if asked and not lists_mappable(index):
        raise unmappable_error(type(index).__name__)
    if asked is not None or not lists_mappable(index):
        return bool(asked)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return n * (index.code_size + 8) > LISTS_IN_MEMORY_SHARE * memory
