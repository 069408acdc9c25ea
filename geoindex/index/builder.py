"""Train then add: an empty FAISS index for a resolved plan, filled on the GPU when faiss-gpu and a
GPU are present (k-means lists), else on the CPU, and handed back as a CPU index to write.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import faiss
import numpy as np

from geoindex.errors import InvalidArgumentError
from geoindex.index.factory import HNSW_QUANTIZER_EF_CONSTRUCTION, IndexPlan, new_index
from geoindex.index.search import faiss_reason

log = logging.getLogger(__name__)


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class IndexBuilder:
    """Train then add, on the GPU when faiss-gpu and a GPU are present, else on the CPU.

    For IVFH3 plans call :meth:`set_h3_centroids` before :meth:`train`, and pass ``lists`` to
    :meth:`add`. :meth:`finish` returns a CPU index ready to write.
    """

    def __init__(self, plan: IndexPlan, use_gpu: bool | None = None):
        self.plan = plan
        # Fast-scan codes (PQ..x4fs) live in interleaved blocks that IndexIVF.add_core does not
        # write: pre-assigned (IVFH3) lists are filled as plain 4-bit PQ and converted in finish().
        self.fast_scan = plan.h3_list_res is not None and _FAST_SCAN.search(plan.faiss_factory) is not None
        filled = replace(plan, faiss_factory=_FAST_SCAN.sub(r"\1", plan.faiss_factory)) if self.fast_scan else plan
        self.cpu_index = new_index(filled)
        prepare_training(self.cpu_index)
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
                        self.plan.faiss_factory, faiss_reason(e))
            self.index = self.cpu_index

    def set_h3_centroids(self, centroids: np.ndarray) -> None:
        """(nlist, 512) float32 L2-normalised list centroids, in list-number order."""
        ivf = self.cpu_index
        if centroids.shape != (ivf.nlist, ivf.d):
            raise InvalidArgumentError(
                f"centroids shape {centroids.shape} != (nlist, d) = {(ivf.nlist, ivf.d)}"
            )
        quantizer = faiss.downcast_index(ivf.quantizer)
        quantizer.reset()
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efConstruction = HNSW_QUANTIZER_EF_CONSTRUCTION
        quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))

    def train(self, sample: np.ndarray) -> None:
        """Train on (m, 512) float32 vectors (k-means lists and/or codec)."""
        if not self.index.is_trained:
            self.index.train(np.ascontiguousarray(sample, dtype=np.float32))

    def add(self, xb: np.ndarray, ids: np.ndarray, lists: np.ndarray | None = None) -> None:
        """Add (n, 512) float32 vectors with (n,) int64 ids; ``lists`` (n,) int64 for IVFH3."""
        if self.plan.h3_list_res is not None:
            if lists is None:
                raise InvalidArgumentError("IVFH3 add needs the list number of every vector")
            add_vectors(self.cpu_index, xb, ids, lists)
        else:
            add_vectors(self.index, xb, ids)

    def trained_empty(self) -> faiss.Index:
        """A CPU copy of the trained index with no vectors yet (what parallel adds start from)."""
        if self.index.ntotal:
            raise InvalidArgumentError("trained_empty() after add(): the index already holds vectors")
        index = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.cpu_index
        return faiss.deserialize_index(faiss.serialize_index(index))

    def finish_merged(self, merged: faiss.Index) -> faiss.Index:
        """The index :meth:`finish` would give had the vectors of ``merged`` (the trained empty index
        filled by parallel adds) been added here."""
        self.cpu_index = self.index = merged
        self.on_gpu = False
        return self.finish()

    def finish(self) -> faiss.Index:
        if self.on_gpu:
            self.cpu_index = faiss.index_gpu_to_cpu(self.index)
            self.index = self.cpu_index
            self.on_gpu = False
        if self.fast_scan:
            self.cpu_index = self.index = _to_fast_scan(self.cpu_index)
            self.fast_scan = False
        return self.cpu_index


ADD_BATCH = 4096


def prepare_training(index: faiss.Index, kmeans_iterations: int | None = None) -> None:
    """One training set-up for every gallery kind: polysemous training off (index_factory turns it on
    for IVF..,PQ; its codes only matter with polysemous_ht set, which geoindex never does, and it
    costs ~60 s per PQ64 build) and, when given, the coarse quantizer's k-means iterations."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or index.is_trained:
        return
    ivf = faiss.downcast_index(ivf)  # the IndexIVFPQ, not its IndexIVF base
    if kmeans_iterations is not None:
        ivf.cp.niter = kmeans_iterations
    if getattr(ivf, "do_polysemous_training", False):
        ivf.do_polysemous_training = False


def add_vectors(index: faiss.Index, xb: np.ndarray, ids: np.ndarray, lists: np.ndarray | None = None) -> None:
    """Add (n, 512) vectors (float32 or float16) with (n,) int64 ids; with ``lists`` (n,) int64,
    each into that inverted list (IVFH3's pre-assigned lists) instead of its nearest centroid's.

    Added :data:`ADD_BATCH` vectors at a time, in order (the same lists, byte for byte): FAISS
    encodes PQ codes of a whole call through (n, M, 256) float32 distance tables, 550 MB for a
    16,807-cell shard with PQ32, 128 MB for a batch.
    """
    for s in range(0, len(xb), ADD_BATCH):
        chunk = np.ascontiguousarray(xb[s : s + ADD_BATCH], dtype=np.float32)
        chunk_ids = np.ascontiguousarray(ids[s : s + ADD_BATCH], dtype=np.int64)
        if lists is None:
            index.add_with_ids(chunk, chunk_ids)
            continue
        # Named references: add_core reads through raw pointers, so the arrays must outlive it.
        chunk_lists = np.ascontiguousarray(lists[s : s + ADD_BATCH], dtype=np.int64)
        index.add_core(len(chunk), faiss.swig_ptr(chunk), faiss.swig_ptr(chunk_ids), faiss.swig_ptr(chunk_lists))
        del chunk_lists


_FAST_SCAN = re.compile(r"(PQ\d+x4)fs(?:_\d+)?\b")


def _to_fast_scan(ivfpq: faiss.Index) -> faiss.Index:
    """A filled IVF..,PQ<m>x4 index -> the same codes as IndexIVFPQFastScan (SIMD 4-bit scan),
    which takes over the coarse quantizer."""
    ivfpq = faiss.downcast_index(ivfpq)
    fast = faiss.IndexIVFPQFastScan(ivfpq)
    fast.nprobe = ivfpq.nprobe
    ivfpq.own_fields, fast.own_fields = False, True  # the quantizer now belongs to the fast-scan index
    fast.referenced_objects = [ivfpq.quantizer]
    return fast
