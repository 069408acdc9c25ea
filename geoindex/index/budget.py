"""``build_index --max-memory SIZE``: the fastest measured configuration whose resident index fits.

Resident is what a :class:`~geoindex.locate.Geolocator` holds in RAM for the index: codes, ids,
the coarse quantizer and the codec's tables (the size of ``vectors.faiss``). The exact store
(:mod:`geoindex.store.exact_store`) is on disk, memory-mapped, and not counted.

The candidates are this project's measurements (benchmarks/bench_recall.py ->
benchmarks/results/recall.json; ``MEASURED`` is tied to that file by a test): per resolution, every
configuration that reached recall@10 >= 0.95 against exact search with top-1 km lost p99 within
one H3 edge, each at the nprobe and re-ranking depth that answered one query fastest
(``ms_single_p50``, one thread). For a budget the builder predicts each one's resident bytes for the
gallery at hand (:func:`predict_resident`) and takes the fastest that fits; a resolution that was
not measured borrows the nearest measured one's list (recorded as ``measured_at``). Like autofaiss'
memory-driven choice, but from measured tables rather than heuristics.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from geoindex.errors import InvalidArgumentError
from geoindex.index.factory import DEFAULT_SEARCH, list_resolution_of, new_index, resolve, with_list_depth
from geoindex.index.search import SearchSettings

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """``"30MB"`` -> 30_000_000, ``"4GiB"`` -> 4 * 2**30, ``"512k"``, ``"1e9"`` is refused (say 1GB)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE.match(str(text))
        unit = m[2].lower() if m else None
        if m is None or unit not in _UNITS:
            raise InvalidArgumentError(
                f"--max-memory {text!r} is not a size: give a number and a unit, e.g. 30MB, 512MiB or 4GiB "
                "(B, KB, MB, GB, TB in powers of 1000; KiB, MiB, GiB, TiB in powers of 1024)"
            )
        value = int(float(m[1]) * _UNITS[unit])
    if value <= 0:
        raise InvalidArgumentError(f"--max-memory {text!r} must be more than 0 bytes, e.g. 30MB")
    return value


@dataclass(frozen=True)
class Measured:
    """One measured configuration (benchmarks/results/recall.json, clean photo queries)."""

    resolution: int
    factory: str  # the geoindex factory string, list resolution included
    nprobe: int
    rerank: int  # 0: none
    store: str | None  # exact store the re-ranking reads (None: no re-ranking, or the encoder)
    recall_at_10: float
    km_lost_p99: float
    ms_single_p50: float

    @property
    def search(self) -> SearchSettings:
        extra = DEFAULT_SEARCH["ivf_hnsw"].faiss_extra if "_HNSW" in self.factory else ()
        return SearchSettings(nprobe=self.nprobe, rerank=self.rerank or None, faiss_extra=extra)


# Generated from benchmarks/results/recall.json by recall_rules.budget_candidates (a test checks).
MEASURED: tuple[Measured, ...] = (
    Measured(5, "IVFH3r2,PQ64x4fs", 32, 256, "fp16", 0.9644, 0.0, 0.7219),
    Measured(5, "IVFH3r2,PQ32", 32, 256, "fp16", 0.9718, 0.0, 0.7453),
    Measured(5, "IVFH3r2,PQ64x4fs", 32, 512, "fp16", 0.976, 0.0, 1.0648),
    Measured(5, "IVFH3r2,PQ32", 32, 512, "fp16", 0.9784, 0.0, 1.0979),
    Measured(6, "IVFH3r2,PQ32", 8, 256, "fp16", 0.9717, 0.0, 0.8745),
    Measured(6, "IVFH3r3,SQfp16", 4, 0, None, 0.9808, 0.0, 0.9523),
    Measured(6, "IVFH3r3,PQ128", 16, 16, None, 0.985, 0.0, 10.5362),
    Measured(6, "IVFH3r3,PQ128", 4, 32, None, 0.9806, 0.0, 14.2449),
    Measured(6, "IVFH3r3,PQ64", 16, 32, None, 0.9758, 0.0, 17.5372),
    Measured(6, "IVFH3r3,PQ32", 4, 64, None, 0.957, 0.06, 20.4896),
    Measured(6, "IVFH3r3,PQ64", 4, 64, None, 0.9785, 0.0, 20.7581),
    Measured(6, "IVFH3r3,PQ128", 16, 64, None, 0.9947, 0.0, 21.9874),
)


@dataclass(frozen=True)
class Choice:
    """What a budget build builds, why, and what it was predicted to cost."""

    factory: str
    search: SearchSettings
    store: str | None
    predicted_resident_bytes: int
    measured: Measured
    measured_at: int

    def to_dict(self) -> dict:
        return {"factory": self.factory, "search": str(self.search), "store": self.store,
                "predicted_resident_bytes": self.predicted_resident_bytes, "measured_at": self.measured_at,
                "measured": asdict(self.measured)}


def check_request(max_memory: int, factory: str, search: SearchSettings | None, resolution: int | None) -> None:
    """Fail before encoding when --max-memory meets options it would override."""
    if resolution is None:
        raise InvalidArgumentError("--max-memory chooses among configurations measured on H3 galleries; for a CSV "
                                   "gallery give --factory and --search instead")
    if factory != "auto" or search is not None:
        raise InvalidArgumentError(
            f"--max-memory picks the factory and search settings itself: drop --factory {factory!r}"
            f"{'' if search is None else f' and --search {str(search)!r}'}, or drop --max-memory"
        )
    if not MEASURED:
        raise InvalidArgumentError("--max-memory needs measured configurations and this build has none: "
                                   "run benchmarks/bench_recall.py")


def candidates_for(resolution: int) -> tuple[int, list[Measured]]:
    """(the measured resolution used, its configurations fastest first)."""
    measured = sorted({m.resolution for m in MEASURED})
    at = min(measured, key=lambda r: (abs(r - resolution), -r))
    return at, sorted((m for m in MEASURED if m.resolution == at), key=lambda m: m.ms_single_p50)


def predict_resident(factory: str, n: int, resolution: int, parents_at: Callable[[int], int | np.ndarray]) -> int:
    """Bytes the cell index for ``factory`` over ``n`` vectors takes in RAM (:func:`predict_bytes` of
    its empty index). ``parents_at(r)``: the gallery's list sizes at H3 resolution r (children per
    parent: exact padding), or only their count (worst-case padding: one block a list)."""
    n_parents, sizes = None, None
    list_res = list_resolution_of(factory, resolution)
    if list_res is not None:
        at = parents_at(list_res)
        sizes = None if np.isscalar(at) else np.asarray(at)
        n_parents = int(at) if sizes is None else len(sizes)
    plan = resolve(factory, n, resolution, n_parents=n_parents)
    return predict_bytes(new_index(plan), n, sizes)


def predict_bytes(empty: faiss.Index, n: int, list_sizes: np.ndarray | None = None, ids: bool = True) -> int:
    """Bytes an index like ``empty`` (made by its factory, untrained) takes resident once trained and
    holding ``n`` vectors: the one prediction of every gallery kind (cells here, photos in
    :mod:`geoindex.photos.photo_index`). The empty index as written (codec tables, headers) + what
    training adds to its transforms (a PCA's matrices) + codes and 8-byte ids per vector (``ids``
    False: a flat index whose ids are its row numbers) + the fast-scan blocks' padding + the coarse
    quantizer (flat centroids, plus the graph for an HNSW one). ``list_sizes``: the vectors each list
    will hold (exact padding); None: the worst case, one block a list."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "empty.faiss")
        faiss.write_index(empty, path)
        fixed = os.path.getsize(path) + _trained_transform_bytes(empty)
    ivf = faiss.try_extract_index_ivf(empty)
    if ivf is None:
        return fixed + n * (empty.sa_code_size() + (8 if ids else 0))
    ivf = faiss.downcast_index(ivf)
    nlist, code = ivf.nlist, ivf.code_size
    padding = 0
    if isinstance(ivf, faiss.IndexIVFFastScan):  # lists are stored in blocks of bbs codes
        padding = (int(np.sum(-list_sizes % ivf.bbs)) if list_sizes is not None else nlist * ivf.bbs) * code
    quantizer = nlist * ivf.d * 4
    hnsw = faiss.downcast_index(ivf.quantizer)
    if isinstance(hnsw, faiss.IndexHNSW):  # level 0: 2M neighbours a node (nb_neighbors(0) is 2M), 4 B each;
        quantizer += nlist * (hnsw.hnsw.nb_neighbors(0) * 4 + 32)  # + its level, offset, ~1/M nodes one level up
    return fixed + n * (code + 8) + padding + quantizer + nlist * 16


def _trained_transform_bytes(index: faiss.Index) -> int:
    """What training adds to the written size of ``index``'s transforms: a PCA's projection, bias,
    mean, eigenvalues and full d_in x d_in eigenvector matrix; another linear map's matrix and bias
    (measured with FAISS 1.15: PCAR384 over 512 dimensions writes 1,840,640 B more once trained)."""
    if isinstance(index, faiss.IndexIDMap):
        index = faiss.downcast_index(index.index)
    if not isinstance(index, faiss.IndexPreTransform):
        return 0
    total = 0
    for i in range(index.chain.size()):
        vt = faiss.downcast_VectorTransform(index.chain.at(i))
        if isinstance(vt, faiss.PCAMatrix):
            total += 4 * (vt.d_out * vt.d_in + vt.d_out + 2 * vt.d_in + vt.d_in * vt.d_in)
        elif isinstance(vt, faiss.LinearTransform):
            total += 4 * (vt.d_out * vt.d_in + (vt.d_out if vt.have_bias else 0))
    return total


def choose(max_memory: int, resolution: int, n: int, parents_at: Callable[[int], int | np.ndarray]) -> Choice:
    """The fastest measured configuration whose predicted resident bytes fit ``max_memory``;
    InvalidArgumentError naming the smallest one (and its size) when none does."""
    at, options = candidates_for(resolution)
    sized = []
    for m in options:
        factory = with_list_depth(m.factory, at, resolution)
        need = predict_resident(factory, n, resolution, parents_at)
        if need <= max_memory:
            return Choice(factory, m.search, m.store, need, m, at)
        sized.append((need, factory, m))
    need, factory, m = min(sized, key=lambda s: s[0])
    raise InvalidArgumentError(
        f"--max-memory {max_memory:,} B ({max_memory / 1e6:.1f} MB) fits no measured configuration for {n:,} cells "
        f"at res {resolution}: the smallest, {factory} [{m.search}], needs {need:,} B ({need / 1e6:.1f} MB); "
        f"give --max-memory {need / 1e6 + 0.1:.1f}MB or more, or a coarser --resolution"
    )
