"""The reference gallery's index: which FAISS factory, what it costs resident, and every refusal
that needs only the arguments (and the CSV's row count), made before any photo is read.

The default rule (:func:`choose_factory`), measured by ``benchmarks/bench_photos.py``: ``Flat`` up
to :data:`FLAT_MAX` photos (exact, 2 KB a photo); above it :data:`COMPRESSED_FACTORY`: a PCA to 384
dimensions with a random rotation, IVF with ~sqrt(n) lists and 48-byte 4-bit fast-scan PQ codes (57 B a
photo resident), the best :data:`RERANK` candidates re-scored from the fp16 exact store on disk
(recall@10 0.95 at 5 ms a query on one thread at 10M photos; 0.97 at 1.8 ms at 1M). Fast-scan lists
are packed for SIMD and cannot be mapped from disk, so a gallery whose lists go to disk
(``--lists-on-disk``, or the lists would take over half this machine's memory) gets
:data:`MAPPABLE_FACTORY` instead (PQ32 codes, lower recall: 0.73 at 1M as measured).

``--max-memory`` takes the first of :data:`OPTIONS` allowed for the gallery whose predicted resident
bytes fit (:func:`predict_resident`: the cell build's prediction,
:func:`geoindex.index.budget.predict_bytes`, of the option's empty index); the first option allowed is
always the default rule's. Resident means the serialised index a reader holds in RAM (codes, ids,
coarse quantizer, codec tables, a PCA's matrices): the exact store (1,024 B a photo) is memory-mapped
from disk and not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from geoindex.errors import InvalidArgumentError
from geoindex.index import disk
from geoindex.index.budget import predict_bytes
from geoindex.index.disk import lists_mappable, unmappable_error
from geoindex.index.search import SearchSettings, apply_search_settings

DIM = 512
FLAT_MAX = 200_000  # Flat: 2 KB a photo resident, exact; above, compressed + re-ranked from the exact store
COMPRESSED_FACTORY = "PCAR384,IVF{nlist},PQ96x4fs"  # bench_photos round 2: recall@10 0.952 at 10M, 0.966 at 1M
RERANK = 2000  # candidates re-scored exactly (fp16 store, ~1.7 ms for 2,000 on one thread)
MAPPABLE_FACTORY = "IVF{nlist}_HNSW32,PQ32"  # lists that FAISS can map from disk (fast-scan's cannot)
MAPPABLE_SEARCH = "nprobe=32,rerank=400"  # bench_photos (earlier harness), 1M: the best recall within 5 ms (0.73)
MIN_PHOTOS = {"PQ96x4fs": 1024, "PQ32": 256, "PQ16": 256, "PQ8": 256}  # fewer cannot train the codes (PCA: 384-d)


def compressed_search(n: int) -> str:
    """The search settings measured for :data:`COMPRESSED_FACTORY` at ``n`` photos: 128 lists probed
    where there are up to 1,024 (1M photos), 224 above (10M: 4,096 lists)."""
    return f"nprobe={128 if nlist_for(n) <= 1024 else 224},rerank={RERANK}"


@dataclass(frozen=True)
class Option:
    """A ``--max-memory`` candidate: its name (its codes: ``Flat``, ``PQ96x4fs``, ...), factory pattern
    ({nlist}: :func:`nlist_for`) and whether its lists can be mapped from disk."""

    cost: str
    pattern: str
    mappable: bool

    def search(self, n: int) -> str:
        if self.cost == "Flat":
            return ""
        return compressed_search(n) if self.cost == "PQ96x4fs" else MAPPABLE_SEARCH


# --max-memory's candidates, preferred first; the first one allowed for the gallery is the default
# rule's choice. PQ16 and PQ8 are smaller, unmeasured fallbacks.
OPTIONS: tuple[Option, ...] = (
    Option("Flat", "Flat", False),
    Option("PQ96x4fs", COMPRESSED_FACTORY, False),
    Option("PQ32", MAPPABLE_FACTORY, True),
    Option("PQ16", "IVF{nlist}_HNSW32,PQ16", True),
    Option("PQ8", "IVF{nlist}_HNSW32,PQ8", True),
)
_OPTION = {o.cost: o for o in OPTIONS}


def nlist_for(n: int) -> int:
    """IVF lists for ``n`` photos: the power of two nearest sqrt(n)."""
    return int(2 ** round(np.log2(max(np.sqrt(n), 1))))


def _allowed(option: Option, n: int, on_disk: bool | None) -> bool:
    if on_disk and not option.mappable and option.cost != "Flat":  # Flat with --lists-on-disk: refused after
        return False
    return n <= FLAT_MAX if option.cost == "Flat" else n >= MIN_PHOTOS[option.cost]


def lists_too_big(n: int) -> bool:
    """Whether the default compressed index's lists (codes and 8-byte ids) for ``n`` photos would
    take over half this machine's memory."""
    return disk.too_big_for_memory(disk.lists_bytes(probe(COMPRESSED_FACTORY.format(nlist=nlist_for(n))), n))


def choose_factory(n: int, lists_on_disk: bool | None = None) -> tuple[str, str]:
    """(factory, search) the measured rule picks for ``n`` photos; above :data:`FLAT_MAX`,
    ``lists_on_disk`` True (or None and the fast-scan lists too big for memory) takes the mappable factory."""
    if n <= FLAT_MAX:
        return "Flat", ""
    if lists_on_disk or (lists_on_disk is None and lists_too_big(n)):
        return MAPPABLE_FACTORY.format(nlist=nlist_for(n)), MAPPABLE_SEARCH
    return COMPRESSED_FACTORY.format(nlist=nlist_for(n)), compressed_search(n)


def predict_resident(cost: str, n: int) -> int:
    """Bytes the index of option ``cost`` (``Flat``, ``PQ96x4fs``, ``PQ32``, ...) takes resident for
    ``n`` photos (:func:`geoindex.index.budget.predict_bytes`; a Flat index's ids are its row numbers)."""
    return predict_bytes(probe(_OPTION[cost].pattern.format(nlist=nlist_for(n))), n, ids=False)


@dataclass(frozen=True)
class BudgetChoice:
    """What ``--max-memory`` picked: the option, its factory pattern and search."""

    max_memory: int
    option: Option

    @property
    def cost(self) -> str:
        return self.option.cost

    @property
    def pattern(self) -> str:
        return self.option.pattern

    def factory(self, n: int) -> str:
        return self.pattern.format(nlist=nlist_for(n))

    def search(self, n: int) -> str:
        return self.option.search(n)

    def to_dict(self, n: int) -> dict:
        return {"max_memory": self.max_memory, "factory": self.factory(n), "search": self.search(n),
                "predicted_resident_bytes": predict_resident(self.cost, n)}


def choose_for_budget(max_memory: int, n: int, lists_on_disk: bool | None = None) -> BudgetChoice:
    """The first option allowed for ``n`` photos (only mappable ones with ``lists_on_disk``) whose
    predicted resident bytes fit ``max_memory``; InvalidArgumentError naming the smallest budget that
    fits when none does."""
    allowed = [o for o in OPTIONS if _allowed(o, n, lists_on_disk)]
    for option in allowed:
        if predict_resident(option.cost, n) <= max_memory:
            return BudgetChoice(max_memory, option)
    need, cost, pattern = min((predict_resident(o.cost, n), o.cost, o.pattern) for o in allowed)
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
    chosen = choose_factory(n_rows, lists_on_disk)[0]
    index, shown = probe(chosen), f"{chosen} (auto for {n_rows:,} photos)"
    check_search(shown, index, search)
    if lists_on_disk and not lists_mappable(index):
        raise unmappable_error(shown)


def lists_on_disk(asked: bool | None, index: faiss.Index, n: int) -> bool:
    """As asked, else (None) when an IVF index's codes and ids would take over half this machine's memory."""
    mappable = lists_mappable(index)
    return disk.lists_on_disk(asked, mappable, disk.lists_bytes(index, n) if mappable else 0, type(index).__name__)
