"""FAISS index construction from a factory string: parse, resolve, train, add, tune.

Factory strings are FAISS's own (``"Flat"``, ``"IVF4096,SQ8"``, ``"IVF16384,PQ64,RFlat"``) with
two geoindex extensions, resolved into plain FAISS strings before anything is built:

- ``IVF`` with no list count (``"IVF,SQ8"``): k-means lists, nlist = 4 * sqrt(n) rounded to a
  power of two, at least 1 and at most n / 39 (FAISS wants >= 39 training points per list).
- ``IVFH3`` (``"IVFH3,SQ8"``) or ``IVFH3r<p>`` (``"IVFH3r3,SQ8"``): one inverted list per H3
  parent cell at resolution p (default ``max(0, R - 3)``, ~343 children a list); the centroid is
  the L2-normalised mean of the children's vectors and every vector goes to its parent's list
  (``faiss.contrib.ivf_tools.add_preassigned``). Geography replaces k-means: no clustering cost,
  and neighbouring cells, whose fine Fourier components differ sharply, share a list.

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

import logging
import math
import re
from dataclasses import dataclass

import faiss
import numpy as np

from geoindex.errors import InvalidArgumentError
from geoindex.location_encoder import EMBED_DIM
from geoindex.rerank import split_search

log = logging.getLogger(__name__)

FLAT_MAX = 20_000
H3_LIST_DEPTH = 3
DEFAULT_SEARCH = {"ivf": "nprobe=16", "hnsw": "efSearch=64", "flat": ""}
# (factory, search) per H3 resolution, from benchmarks/results/recall.json "chosen" (README,
# "Index factories and the default"): the fewest code bytes reaching recall@10 >= 0.95. SQ8
# (512 B) at res 3-5; at res 6 cells are dense enough for 4-bit SQ (256 B) on H3-parent lists.
# No PQ code of <= 128 B reaches 0.95 on its own at any measured resolution (best: PQ128,
# 0.85-0.92); with exact re-ranking (search "rerank=R", geoindex.rerank) PQ64 does at res 6, at
# 3-10 ms a query on one core: over the 1 ms a default may cost, so an option, not the default.
MEASURED_DEFAULTS: dict[int, tuple[str, str]] = {
    3: ("IVF,SQ8", "nprobe=32"),
    4: ("IVF,SQ8", "nprobe=16"),
    5: ("IVF,SQ8", "nprobe=4"),
    6: ("IVFH3,SQ4", "nprobe=4"),
}
_IVF_TOKEN = re.compile(r"^IVF(?P<nlist>\d+)?$")
_IVFH3_TOKEN = re.compile(r"^IVFH3(?:r(?P<res>\d+))?$")


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
            "use --index IVF,SQ8 or Flat"
        )
    res = max(0, resolution - H3_LIST_DEPTH) if requested is None else requested
    if res >= resolution:
        raise InvalidArgumentError(
            f"IVFH3r{res}: list resolution must be coarser than the gallery's ({resolution}): "
            f"use IVFH3r{max(0, resolution - H3_LIST_DEPTH)} or plain IVFH3"
        )
    return res


def auto_choice(resolution: int | None, n_rows: int | None = None) -> tuple[str, str]:
    """The default (factory, search) for an H3 resolution, or for a CSV gallery of ``n_rows`` rows."""
    if resolution is None:
        return ("Flat", "") if (n_rows or 0) < FLAT_MAX else ("IVF,SQ8", DEFAULT_SEARCH["ivf"])
    if resolution < min(MEASURED_DEFAULTS):
        return "Flat", ""
    return MEASURED_DEFAULTS[min(resolution, max(MEASURED_DEFAULTS))]


def auto_factory(resolution: int | None, n_rows: int | None = None) -> str:
    return auto_choice(resolution, n_rows)[0]


def check_factory(factory: str, resolution: int | None, search: str | None = None,
                  n_rows: int | None = None) -> None:
    """Fail fast on a malformed factory or search string, before any encoding (dummy list count)."""
    if factory == "auto":
        factory = auto_factory(resolution, n_rows)
    head, rest = _split(factory)
    if m := _IVFH3_TOKEN.match(head):
        h3_list_resolution(resolution, int(m["res"]) if m["res"] else None)
        if not rest:
            raise InvalidArgumentError(f"factory {factory!r} names no codec: use e.g. IVFH3,SQ8")
        probe = f"IVF16,{rest}"
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
    if search:
        apply_search_params(index, search)


def _faiss_reason(e: RuntimeError) -> str:
    """FAISS's own sentence from a C++ exception, without the source location."""
    return str(e).strip().splitlines()[-1].rsplit(": ", 1)[-1][:200]


def _make(faiss_factory: str, shown: str) -> faiss.Index:
    try:
        return faiss.index_factory(EMBED_DIM, faiss_factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        reason = _faiss_reason(e)
        raise InvalidArgumentError(
            f"bad index factory string {shown!r} ({reason}): give a FAISS factory such as "
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
        return IndexPlan(f"IVFH3r{res},{rest}", f"IVF{n_parents},{rest}", res)
    if (m := _IVF_TOKEN.match(head)) and m["nlist"] is None:
        concrete = f"IVF{nlist_rule(n)}" + (f",{rest}" if rest else "")
        return IndexPlan(concrete, concrete)
    return IndexPlan(factory, factory)


def default_search(factory: str, plan: IndexPlan, resolution: int | None = None, n_rows: int | None = None) -> str:
    """The search string stored when the user gives none: the measured one for ``auto``, else
    FAISS-family defaults (nprobe 16, efSearch 64)."""
    if factory == "auto":
        return auto_choice(resolution, n_rows)[1]
    if plan.is_ivf:
        return DEFAULT_SEARCH["ivf"]
    if "HNSW" in plan.faiss_factory:
        return DEFAULT_SEARCH["hnsw"]
    return DEFAULT_SEARCH["flat"]


def apply_search_params(index: faiss.Index, search: str) -> None:
    """Set ``"nprobe=16,efSearch=64"`` style parameters; InvalidArgumentError when FAISS refuses.
    A ``rerank=R`` part is geoindex's (:mod:`geoindex.rerank`): checked here, applied at query time."""
    search, _ = split_search(search)
    if not search:
        return
    try:
        faiss.ParameterSpace().set_index_parameters(index, search)
    except RuntimeError as e:
        reason = _faiss_reason(e)
        raise InvalidArgumentError(
            f"search parameters {search!r} do not fit this index ({reason}): "
            "use e.g. nprobe=16 for IVF, efSearch=64 for HNSW, or an empty string for Flat"
        ) from e


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


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class IndexBuilder:
    """Train then add, on the GPU when faiss-gpu and a GPU are present, else on the CPU.

    For IVFH3 plans call :meth:`set_h3_centroids` before :meth:`train`, and pass ``lists`` to
    :meth:`add`. :meth:`finish` returns a CPU index ready to write.
    """

    def __init__(self, plan: IndexPlan, use_gpu: bool | None = None):
        self.plan = plan
        self.cpu_index = new_index(plan)
        ivf = faiss.try_extract_index_ivf(self.cpu_index)
        ivf = faiss.downcast_index(ivf) if ivf is not None else None
        if isinstance(ivf, faiss.IndexIVFPQ) and ivf.do_polysemous_training:
            # index_factory turns polysemous training on for IVF..,PQ; its codes only matter with
            # polysemous_ht set, which geoindex never does, and it costs ~60 s per PQ64 build.
            ivf.do_polysemous_training = False
        self.index = self.cpu_index
        self.on_gpu = False
        want_gpu = gpu_available() if use_gpu is None else use_gpu
        if use_gpu and not gpu_available():
            log.warning("GPU build asked for but faiss has no GPU (install faiss-gpu): building on the CPU")
        if want_gpu and gpu_available():
            if plan.h3_list_res is not None:
                log.info("IVFH3 lists are pre-assigned on the CPU (no k-means to accelerate)")
            elif plan.is_ivf:
                self._to_gpu()
            else:
                log.info("%s has no training to accelerate: adding on the CPU", plan.faiss_factory)

    def _to_gpu(self) -> None:
        try:
            self._gpu_res = faiss.StandardGpuResources()
            options = faiss.GpuClonerOptions()
            options.useFloat16 = True  # only affects the PQ lookup tables, not stored codes
            self.index = faiss.index_cpu_to_gpu(self._gpu_res, 0, self.cpu_index, options)
            self.on_gpu = True
            log.info("training and adding on GPU 0")
        except RuntimeError as e:
            log.warning("faiss cannot build %r on the GPU (%s): building on the CPU",
                        self.plan.faiss_factory, _faiss_reason(e))
            self.index = self.cpu_index

    def set_h3_centroids(self, centroids: np.ndarray) -> None:
        """(nlist, 512) float32 L2-normalised list centroids, in list-number order."""
        ivf = self.cpu_index
        if centroids.shape != (ivf.nlist, ivf.d):
            raise InvalidArgumentError(
                f"centroids shape {centroids.shape} != (nlist, d) = {(ivf.nlist, ivf.d)}"
            )
        ivf.quantizer.reset()
        ivf.quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))

    def train(self, sample: np.ndarray) -> None:
        """Train on (m, 512) float32 vectors (k-means lists and/or codec)."""
        if not self.index.is_trained:
            self.index.train(np.ascontiguousarray(sample, dtype=np.float32))

    def add(self, xb: np.ndarray, ids: np.ndarray, lists: np.ndarray | None = None) -> None:
        """Add (n, 512) float32 vectors with (n,) int64 ids; ``lists`` (n,) int64 for IVFH3."""
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.plan.h3_list_res is not None:
            if lists is None:
                raise InvalidArgumentError("IVFH3 add needs the list number of every vector")
            # Named references: add_core reads through raw pointers, so the arrays must outlive it.
            lists = np.ascontiguousarray(lists, dtype=np.int64)
            self.cpu_index.add_core(len(xb), faiss.swig_ptr(xb), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
            del lists
            return
        self.index.add_with_ids(xb, ids)

    def finish(self) -> faiss.Index:
        if self.on_gpu:
            self.cpu_index = faiss.index_gpu_to_cpu(self.index)
            self.index = self.cpu_index
            self.on_gpu = False
        return self.cpu_index


def per_call_params(index: faiss.Index, search: str) -> faiss.SearchParameters:
    """A thread-safe per-query override: ``"nprobe=64"`` (IVF) or ``"efSearch=128"`` (HNSW) as a
    SearchParameters object, leaving the index's own defaults untouched. A ``rerank=R`` part is
    checked and left to the caller (:mod:`geoindex.rerank`)."""
    search, _ = split_search(search)
    try:
        pairs = dict(part.split("=", 1) for part in search.split(",") if part.strip())
        values = {k.strip(): int(v) for k, v in pairs.items()}
    except ValueError:
        raise InvalidArgumentError(f"search parameters {search!r} are not name=integer pairs, e.g. nprobe=64") from None
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    allowed = {"nprobe"} if isinstance(inner, faiss.IndexIVF) else {"efSearch"} if isinstance(inner, faiss.IndexHNSW) else set()
    unknown = set(values) - allowed
    if unknown or any(v < 1 for v in values.values()):
        raise InvalidArgumentError(
            f"search parameters {search!r} do not fit this index: it takes "
            f"{', '.join(sorted(allowed)) + '=N (N >= 1)' if allowed else 'no FAISS search parameters (exact)'}"
            ", and rerank=R for exact re-ranking"
        )
    if "nprobe" in values:
        params = faiss.SearchParametersIVF()
        params.nprobe = min(values["nprobe"], inner.nlist)
    elif "efSearch" in values:
        params = faiss.SearchParametersHNSW()
        params.efSearch = values["efSearch"]
    else:
        params = faiss.SearchParameters()
    return params
