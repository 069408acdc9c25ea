"""The photo index, built without ever holding every embedding: CLIP features are read from the
feature cache (memory-mapped shards) and sent through GeoCLIP's image head a batch at a time.

Two passes over the cache: the first keeps only the seeded training sample's embeddings (the rows
``rng(seed).choice(n, train_size(n), replace=False)``, sorted: 64 a list (:mod:`geoindex.index.training`),
at least 65,536, as bench_photos measured); the second adds every embedding to the index in
chunks of :data:`ADD_CHUNK` and writes the same chunk into the fp16 exact store on disk. Batches and
chunks start at the same rows as the in-memory build's did (multiples of :data:`EMBED_BATCH` and
:data:`ADD_CHUNK`), so the head and FAISS see the same inputs and the index and store come out byte for
byte the same. FAISS gets each chunk :data:`~geoindex.index.builder.ADD_BATCH` vectors at a time (the
same bytes, tested): PQ encodes a call's vectors through (n, M, 256) float distance tables, 2.1 GB for
65,536 vectors with PQ32, 134 MB for 4,096. Peak memory, whatever the gallery's size: the training
sample (262,144 embeddings, 0.5 GB, at 10M photos) or one chunk (128 MB) plus FAISS's work space
for one batch.

With the lists on disk each chunk is added to its own copy of the trained empty index and kept as a
part file of inverted lists; the parts are merged in order into ``lists.ivfdata``
(:func:`geoindex.pipeline.distributed.merge_parts`, as the cell build does): the same ids and codes in
the same lists as an in-memory add.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np

from geoindex.errors import InvalidArgumentError
from geoindex.index import training
from geoindex.index.builder import prepare_training
from geoindex.photos.photo_index import DIM, nlist_for

EMBED_BATCH = 8192  # rows through the head at a time
ADD_CHUNK = 65536  # vectors added to FAISS and written to the store at a time
PARTS = ".parts"


class Embeddings:
    """(n, 512) float32 L2-normalised GeoCLIP image embeddings of a feature cache's plain views,
    computed on demand, a batch at a time (the row order is the cache's)."""

    def __init__(self, cache, weights):
        from geoindex.encoders.clip import head_width, load_geoclip_head

        self.cache = cache
        self.head = load_geoclip_head(weights)
        if head_width(self.head) != cache.width:
            raise InvalidArgumentError(f"the GeoCLIP head takes {head_width(self.head)}-d features, the cache holds "
                                       f"{cache.width}-d ({cache.clip_model}): give --weights trained on that backbone")

    def __len__(self) -> int:
        return len(self.cache)

    def batches(self, rows: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, (b, 512) embeddings) for each batch of EMBED_BATCH rows in order; with
        ``rows`` (sorted row numbers) only the batches holding one of them."""
        import torch

        n = len(self)
        with torch.inference_mode():
            for s in range(0, n, EMBED_BATCH):
                e = min(s + EMBED_BATCH, n)
                if rows is not None and np.searchsorted(rows, s) == np.searchsorted(rows, e):
                    continue
                feats = torch.from_numpy(self.cache.take(np.arange(s, e)))
                yield s, torch.nn.functional.normalize(self.head(feats), dim=1).numpy()

    def chunks(self, size: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """((m,) int64 ids, (m, 512) embeddings) for rows [k * size, (k + 1) * size), in order."""
        size = size or ADD_CHUNK
        held, start = [], 0
        for _, xb in self.batches():
            held.append(xb)
            while sum(len(h) for h in held) >= size:
                block = np.concatenate(held)
                yield np.arange(start, start + size, dtype=np.int64), block[:size]
                start += size
                held = [block[size:]] if len(block) > size else []
        if held:
            block = np.concatenate(held)
            yield np.arange(start, start + len(block), dtype=np.int64), block

    def take_sorted(self, rows: np.ndarray) -> np.ndarray:
        """(m,) sorted distinct row numbers -> (m, 512) their embeddings, in one pass."""
        out = np.empty((len(rows), DIM), np.float32)
        for s, xb in self.batches(rows):
            lo, hi = np.searchsorted(rows, s), np.searchsorted(rows, s + len(xb))
            out[lo:hi] = xb[rows[lo:hi] - s]
        return out


KMEANS_ITERATIONS = 10  # the photo gallery's coarse quantizer, as bench_photos measured it


def new_index(factory: str) -> faiss.Index:
    """An empty photo index of ``factory`` (ids are row numbers: no IDMap), set up for training by
    the cell build's rule (:func:`geoindex.index.builder.prepare_training`)."""
    index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    prepare_training(index, KMEANS_ITERATIONS)
    return index


def train_size(n: int) -> int:
    """Photos the index trains on (:func:`geoindex.index.training.train_size`: 64 a list, at least
    65,536, not capped for photos)."""
    return training.train_size(n, nlist_for(n), cap=None)


def train(index: faiss.Index, emb: Embeddings, factory: str, seed: int) -> int:
    """Train ``index`` on the seeded sample of embeddings; returns its size (0: nothing to train)."""
    if index.is_trained:
        return 0
    n = len(emb)
    sample = np.sort(np.random.default_rng(seed).choice(n, train_size(n), replace=False))
    xt = emb.take_sorted(sample)
    try:
        index.train(xt)
    except RuntimeError as e:
        raise InvalidArgumentError(f"--factory {factory!r} cannot be trained on {n} photos ({e}): "
                                   "use --factory auto (Flat for small galleries) or fewer lists/codes") from e
    return len(sample)


def fill(index: faiss.Index, emb: Embeddings, folder: Path, store: bool, lists_file: Path | None) -> faiss.Index:
    """Add every embedding to the trained ``index`` (into ``lists_file`` on disk when given) and,
    with ``store``, write the fp16 exact store into ``folder``, in one pass; returns the filled index."""
    from geoindex.store.exact_store import write_store

    add, finish = _in_parts(index, folder / PARTS, lists_file) if lists_file is not None else _in_memory(index)

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for ids, xb in emb.chunks():
            add(ids, xb)
            yield ids, xb

    if store:  # an fp16 store reads its source once: the add rides along
        write_store(folder, "fp16", np.arange(len(emb), dtype=np.int64), chunks)
    else:
        for _ in chunks():
            pass
    return finish()


def _in_memory(index: faiss.Index) -> tuple[Callable, Callable]:
    from geoindex.index.builder import ADD_BATCH

    def add(ids: np.ndarray, xb: np.ndarray) -> None:
        for s in range(0, len(xb), ADD_BATCH):  # the same lists as one call, a fraction of its work space
            index.add(xb[s : s + ADD_BATCH])

    return add, (lambda: index)


def _in_parts(trained: faiss.Index, parts: Path, lists_file: Path) -> tuple[Callable, Callable]:
    """Each chunk added to a copy of the trained empty index, its lists kept in ``parts``; merged
    in order into ``lists_file`` at the end (the parts folder is removed)."""
    from geoindex.pipeline.distributed import fill_part, merge_parts

    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    blob = faiss.serialize_index(trained)
    files: list[Path] = []

    def add(ids: np.ndarray, xb: np.ndarray) -> None:
        files.append(parts / f"{len(files):05d}.ivl")
        fill_part(blob, ids, xb, None).tofile(files[-1])

    def finish() -> faiss.Index:
        index = merge_parts(trained, files, lists_file)
        shutil.rmtree(parts)
        return index

    return add, finish
