"""FAISS index factory strings: parse, check, resolve (``IVF`` rule, ``IVFH3`` lists), the measured default.

Factory strings are FAISS's own (``"Flat"``, ``"IVF4096,SQ8"``, ``"IVF16384,PQ64,RFlat"``) with
two geoindex extensions, resolved into plain FAISS strings before anything is built:

- ``IVF`` with no list count (``"IVF,SQ8"``): k-means lists, nlist = 4 * sqrt(n) rounded to a
  power of two, at least 1 and at most n / 39 (FAISS wants >= 39 training points per list).
- ``IVFH3`` (``"IVFH3,SQ8"``) or ``IVFH3r<p>`` (``"IVFH3r3,SQ8"``): one inverted list per H3
  parent cell at resolution p (default ``max(0, R - 3)``, ~343 children a list); the centroid is
  the L2-normalised mean of the children's vectors and every vector goes to its parent's list
  (``faiss.contrib.ivf_tools.add_preassigned``). Geography replaces k-means: no clustering cost,
  and neighbouring cells, whose fine Fourier components differ sharply, share a list.
  ``IVFH3_HNSW32`` (FAISS's ``IVF..._HNSW<M>`` syntax) finds the lists to probe with an HNSW graph
  over those centroids instead of scanning them all: at res 6 the scan of 14,408 centroids is
  most of a query. The geo embedding space is full of far-apart look-alikes that trap a greedy
  graph walk, so it needs a wide beam: ``quantizer_efSearch=256`` by default (measured at res 6:
  99.4% of the 4 best lists found, vs 95.5% at 64).

``auto`` picks the measured default (``MEASURED_DEFAULTS``, chosen by benchmarks/bench_recall.py
and tied to its results/recall.json by a test): per H3 resolution the codec that reaches
recall@10 >= 0.95 against exact search with the fewest code bytes per vector, and the smallest
nprobe that reaches it. Below the measured range (res <= 2, a few thousand cells) and for CSV
galleries under ``FLAT_MAX`` rows: ``Flat`` (exact); above it, res 6's choice; larger CSV
galleries: ``IVF,SQ8``. The choice depends only on what is known before encoding, so search
parameters are checked up front.
Metric is always inner product on L2-normalised vectors; ids are H3 cell ids (int64).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import faiss

from geoindex.constants import EMBED_DIM
from geoindex.errors import InvalidArgumentError
from geoindex.index.defaults import FLAT_MAX, MEASURED
from geoindex.index.search import SearchSettings, apply_search_settings, faiss_reason

H3_LIST_DEPTH = 3
DEFAULT_SEARCH = {"ivf": SearchSettings(nprobe=16), "hnsw": SearchSettings(ef_search=64), "flat": SearchSettings(),
                  "ivf_hnsw": SearchSettings(nprobe=16, faiss_extra=(("quantizer_efSearch", 256),))}
MEASURED_DEFAULTS: dict[int, tuple[str, SearchSettings]] = {
    res: (factory, SearchSettings.parse(search)) for res, (factory, search) in MEASURED.items()
}
# HNSW coarse quantizers (``IVFH3_HNSW32``): graph build beam. FAISS's default (40) leaves the
# geo centroids' graph too sparse: measured at res 6, 94.8% of the 4 best lists found at
# efSearch 256 with 40, 99.4% with 200 (+0.3 s to build over 14,408 centroids).
HNSW_QUANTIZER_EF_CONSTRUCTION = 200
_IVF_TOKEN = re.compile(r"^IVF(?P<nlist>\d+)?$")
_IVFH3_TOKEN = re.compile(r"^IVFH3(?:r(?P<res>\d+))?(?P<hnsw>_HNSW\d+)?$")


@dataclass(frozen=True)
class IndexPlan:
    """A resolved factory: what FAISS builds, and how lists are formed.

    ``factory``: the geoindex string with every number filled in (``"IVFH3r3,SQ8"``).
    ``faiss_factory``: the string handed to ``faiss.index_factory`` (``"IVF14158,SQ8"``).
    ``h3_list_res``: parent resolution of the lists for IVFH3, else None.
    """

    factory: str
    faiss_factory: str
    h3_list_res: int | None = None

    @property
    def is_ivf(self) -> bool:
        return self.faiss_factory.split(",")[0].startswith("IVF") or ",IVF" in self.faiss_factory


def _split(factory: str) -> tuple[str, str]:
    head, _, rest = factory.strip().partition(",")
    return head.strip(), rest.strip()


def nlist_rule(n: int) -> int:
    """Default k-means list count for n vectors: 2^round(log2(4 sqrt n)), clipped to [1, n // 39]."""
    if n <= 0:
        return 1
    nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    return int(max(1, min(nlist, n // 39)))


def h3_list_resolution(resolution: int | None, requested: int | None) -> int:
    if resolution is None:
        raise InvalidArgumentError(
            "IVFH3 lists follow H3 parents, but this gallery is not an H3 gallery (CSV rows): "
            "use --factory IVF,SQ8 or Flat"
        )
    res = max(0, resolution - H3_LIST_DEPTH) if requested is None else requested
    if res >= resolution:
        raise InvalidArgumentError(
            f"IVFH3r{res}: list resolution must be coarser than the gallery's ({resolution}): "
            f"use IVFH3r{max(0, resolution - H3_LIST_DEPTH)} or plain IVFH3"
        )
    return res


def list_resolution_of(factory: str, resolution: int | None) -> int | None:
    """The H3 resolution of an ``IVFH3`` factory's lists for a gallery at ``resolution`` (the
    ``r<p>`` it names, else the default depth); None for any other factory."""
    m = _IVFH3_TOKEN.match(_split(factory)[0])
    return None if m is None else h3_list_resolution(resolution, int(m["res"]) if m["res"] else None)


def with_list_depth(factory: str, measured_res: int, resolution: int) -> str:
    """An ``IVFH3r<p>`` factory measured at ``measured_res`` moved to ``resolution`` keeping its lists'
    depth below the cells (``IVFH3r2,PQ32`` at res 6 -> ``IVFH3r5,PQ32`` at res 9); other factories
    unchanged."""
    m = re.match(r"^IVFH3r(\d+)", factory)
    if not m or measured_res == resolution:
        return factory
    return f"IVFH3r{max(0, int(m[1]) + resolution - measured_res)}{factory[m.end():]}"


def auto_choice(resolution: int | None, n_rows: int | None = None) -> tuple[str, SearchSettings]:
    """The default (factory, search) for an H3 resolution, or for a CSV gallery of ``n_rows`` rows."""
    if resolution is None:
        return ("Flat", DEFAULT_SEARCH["flat"]) if (n_rows or 0) < FLAT_MAX else ("IVF,SQ8", DEFAULT_SEARCH["ivf"])
    if resolution < min(MEASURED_DEFAULTS):
        return "Flat", DEFAULT_SEARCH["flat"]
    measured = min(resolution, max(MEASURED_DEFAULTS))
    factory, search = MEASURED_DEFAULTS[measured]
    return with_list_depth(factory, measured, resolution), search


# land cells of the global galleries the defaults were measured on (README, the build table)
GLOBAL_LAND_CELLS = {3: 13_483, 4: 88_052, 5: 594_367, 6: 4_084_324}


def regional_choice(resolution: int, n: int) -> tuple[str, SearchSettings]:
    """``auto`` for a regional build of ``n`` cells at ``resolution``: the measured default of the
    global gallery with about as many cells (the largest with no more), its lists kept as deep below
    the cells; ``Flat`` under ``FLAT_MAX``. A country at res 7 (~100K cells) gets res 4's
    ``IVF,SQ8``, not res 7's re-ranked PQ made for 29M."""
    if n < FLAT_MAX:
        return "Flat", DEFAULT_SEARCH["flat"]
    like = max((r for r, count in GLOBAL_LAND_CELLS.items() if count <= n), default=min(GLOBAL_LAND_CELLS))
    factory, search = MEASURED_DEFAULTS[like]
    return with_list_depth(factory, like, resolution), search


def auto_factory(resolution: int | None, n_rows: int | None = None) -> str:
    return auto_choice(resolution, n_rows)[0]


def canonical_factory(factory: str) -> str:
    """``factory`` with the spaces around its parts dropped (``" IVFH3 , SQ8"`` -> ``"IVFH3,SQ8"``)."""
    return ",".join(part.strip() for part in str(factory).strip().split(","))


def check_factory(factory: str, resolution: int | None, search: SearchSettings | None = None,
                  n_rows: int | None = None) -> faiss.Index:
    """Fail fast on a malformed factory or search string, before any encoding; return the empty
    probe index it makes (a dummy list count: what kind of index, not its size)."""
    if factory == "auto":
        factory = auto_factory(resolution, n_rows)
    head, rest = _split(factory)
    if m := _IVFH3_TOKEN.match(head):
        h3_list_resolution(resolution, int(m["res"]) if m["res"] else None)
        if not rest:
            raise InvalidArgumentError(f"factory {factory!r} names no codec: use e.g. IVFH3,SQ8")
        probe = f"IVF16{m['hnsw'] or ''},{rest}"
        if "," in rest:
            raise InvalidArgumentError(
                f"factory {factory!r}: IVFH3 takes a single codec after the lists (SQ8, SQfp16, PQ64, "
                "Flat); for refinement or transforms use k-means lists, e.g. IVF,PQ64,RFlat"
            )
    elif (m := _IVF_TOKEN.match(head)) and m["nlist"] is None:
        probe = f"IVF16,{rest}" if rest else "IVF16"
    else:
        probe = factory
    index = _make(probe, factory)
    if search is not None:
        apply_search_settings(index, search)
    return index


def _make(faiss_factory: str, shown: str) -> faiss.Index:
    try:
        return faiss.index_factory(EMBED_DIM, faiss_factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise InvalidArgumentError(
            f"bad index factory string {shown!r} ({faiss_reason(e)}): give a FAISS factory such as "
            "Flat, IVFH3,SQ8, IVF4096,SQ8 or IVF,PQ64,RFlat"
        ) from e


def resolve(factory: str, n: int, resolution: int | None, n_parents: int | None = None) -> IndexPlan:
    """Turn ``factory`` (maybe ``auto``, ``IVF,..`` or ``IVFH3..``) into a concrete IndexPlan.

    ``n``: gallery size. ``n_parents``: distinct H3 parents at the list resolution (IVFH3 only;
    computed by the caller from the cell ids).
    """
    if factory == "auto":
        factory = auto_factory(resolution, n)
    head, rest = _split(factory)
    if m := _IVFH3_TOKEN.match(head):
        res = h3_list_resolution(resolution, int(m["res"]) if m["res"] else None)
        if n_parents is None:
            raise InvalidArgumentError("IVFH3 needs the parent count: pass n_parents")
        hnsw = m["hnsw"] or ""
        return IndexPlan(f"IVFH3r{res}{hnsw},{rest}", f"IVF{n_parents}{hnsw},{rest}", res)
    if (m := _IVF_TOKEN.match(head)) and m["nlist"] is None:
        concrete = f"IVF{nlist_rule(n)}" + (f",{rest}" if rest else "")
        return IndexPlan(concrete, concrete)
    return IndexPlan(factory, factory)


def default_search(factory: str, plan: IndexPlan, resolution: int | None = None,
                   n_rows: int | None = None) -> SearchSettings:
    """The search settings stored when the user gives none: the measured one for ``auto``, else
    FAISS-family defaults (nprobe 16, efSearch 64)."""
    if factory == "auto":
        return auto_choice(resolution, n_rows)[1]
    if plan.is_ivf:
        return DEFAULT_SEARCH["ivf_hnsw" if "_HNSW" in plan.faiss_factory.split(",")[0] else "ivf"]
    if "HNSW" in plan.faiss_factory:
        return DEFAULT_SEARCH["hnsw"]
    return DEFAULT_SEARCH["flat"]


def new_index(plan: IndexPlan) -> faiss.Index:
    """An empty index for ``plan``: ids are supported (IDMap wrapper where FAISS needs one)."""
    index = _make(plan.faiss_factory, plan.factory)
    if plan.h3_list_res is not None:
        if not isinstance(index, faiss.IndexIVF):
            raise InvalidArgumentError(f"factory {plan.factory!r} did not give an IVF index")
        return index
    if faiss.try_extract_index_ivf(index) is not None and isinstance(index, faiss.IndexIVF):
        return index
    return faiss.IndexIDMap(index)


