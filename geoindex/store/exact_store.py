"""The exact store: every gallery vector on disk, memory-mapped, read only for re-ranked candidates.

A compact index (PQ codes of 16-64 B) only has to find the neighbourhood; the exact order of its
best R candidates comes from here, not from RAM and not from the encoder. ``DIR/exact.npy`` is an
(n, 512) array in the cell table's row order (cell ids sorted), so a candidate's row is the
cell table's ``rows(ids)``: no extra id column. Kinds:

- ``fp16`` (1,024 B a vector): cosines within ~1e-4 of fp32.
- ``sq8`` (512 B): 8-bit per dimension over that dimension's range in the gallery (min and step in
  ``DIR/exact_sq8.npy``, (2, 512) float32); cosines within ~1e-3.
- ``fp32`` (2,048 B): the vectors the builder encoded, bit for bit.

A query reads R rows (R KB in fp16): from the page cache once warm, else a few random disk reads.
The manifest's ``store`` entry names the file and kind; its size and SHA-256 are in ``files`` like
every other file, so a missing, truncated or altered store is refused when the index opens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from geoindex.atomic import open_memmap
from geoindex.constants import EMBED_DIM
from geoindex.errors import IndexDirError, InvalidArgumentError

STORE = "exact.npy"
SQ8_PARAMS = "exact_sq8.npy"
KINDS = {"fp16": np.float16, "sq8": np.uint8, "fp32": np.float32}
CHOICES = ("auto", "none", *KINDS)


def check_kind(kind: str) -> None:
    if kind not in CHOICES:
        raise InvalidArgumentError(
            f"--store {kind!r} is not one of {', '.join(CHOICES)}: fp16 (1 KB a vector on disk) keeps exact "
            "re-ranking scores within 1e-4, sq8 halves that, none re-ranks with the encoder"
        )


def resolve_kind(kind: str, search) -> str | None:
    """The store a build writes: ``auto`` is fp16 when the index re-ranks by default (its search
    settings name rerank=R), else none; None means no store."""
    if kind == "auto":
        return "fp16" if search.rerank_depth else None
    return None if kind == "none" else kind


def bytes_per_vector(kind: str) -> int:
    """Bytes a store of ``kind`` takes on disk per vector (1,024 for fp16)."""
    return np.dtype(KINDS[kind]).itemsize * EMBED_DIM


def store_files(kind: str | None) -> tuple[str, ...]:
    """The file names a store of ``kind`` writes (none for None)."""
    if kind is None:
        return ()
    return (STORE, SQ8_PARAMS) if kind == "sq8" else (STORE,)


def write_store(folder: Path, kind: str, sorted_ids: np.ndarray,
                source: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]) -> int:
    """Write the store of ``kind`` into ``folder``: rows in the order of ``sorted_ids`` (n,) int64.
    ``source()`` yields (ids, (m, 512) float32 vectors) covering every id once; sq8 calls it twice
    (ranges, then codes). Returns the bytes written."""
    return write_store_rows(folder, kind, len(sorted_ids),
                            lambda: ((np.searchsorted(sorted_ids, ids), xb) for ids, xb in source()))


def write_store_rows(folder: Path, kind: str, n: int,
                     source: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]) -> int:
    """:func:`write_store` given the rows: ``source()`` yields (the rows: (m,) int64 positions or a
    slice, (m, 512) float32 vectors) covering rows 0..n-1 once. The rows are written through a file map, so the
    caller holds nothing per row (a build passes each shard's rows from its offset)."""
    params = None
    if kind == "sq8":
        lo = np.full(EMBED_DIM, np.inf, np.float32)
        hi = np.full(EMBED_DIM, -np.inf, np.float32)
        for _, xb in source():
            lo, hi = np.minimum(lo, xb.min(axis=0)), np.maximum(hi, xb.max(axis=0))
        step = np.maximum(hi - lo, np.float32(1e-12)) / 255
        params = np.stack([lo, step]).astype(np.float32)
        np.save(folder / SQ8_PARAMS, params)
    out = open_memmap(folder / STORE, KINDS[kind], (n, EMBED_DIM))  # allocated whole: a full disk is no SIGBUS
    filled = 0
    for rows, xb in source():
        out[rows] = _encode(xb, kind, params)
        filled += len(xb)
    out.flush()
    del out
    if filled != n:
        raise IndexDirError(f"internal: the exact store got {filled} vectors for {n} cells")
    return sum((folder / f).stat().st_size for f in store_files(kind))


_FP16 = faiss.IndexScalarQuantizer(EMBED_DIM, faiss.ScalarQuantizer.QT_fp16)  # untrained is fine: fp16 has no ranges


def _encode(xb: np.ndarray, kind: str, params: np.ndarray | None) -> np.ndarray:
    if kind == "sq8":
        return np.clip(np.rint((xb - params[0]) / params[1]), 0, 255).astype(np.uint8)
    return xb.astype(KINDS[kind])


@dataclass
class ExactStore:
    """An opened store: ``data`` (n, 512) memory-mapped; :meth:`vectors` decodes rows to float32."""

    path: Path
    kind: str
    data: np.ndarray
    params: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.data)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """(m,) row positions -> (m, 512) float32."""
        raw = self.data[np.asarray(rows, dtype=np.int64)]
        if self.kind == "sq8":
            return raw.astype(np.float32) * self.params[1] + self.params[0]
        if self.kind == "fp16":  # FAISS's SIMD half -> float (numpy's astype is ~10x slower)
            return _FP16.sa_decode(raw.view(np.uint8))
        return raw

    def scores(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        """(m,) row positions, one (512,) float32 query -> (m,) float32 exact inner products.

        fp16 rows are scored by FAISS's fp16 scalar-quantizer kernel on the raw halves (a scratch
        index holding just these rows), without decoding them to float32 first: 1.7 ms instead
        of 18 for 2,000 rows on one thread, 0.25 instead of 0.46 ms for 256 (measured side by side).
        """
        if self.kind != "fp16":
            return self.vectors(rows) @ q
        raw = np.ascontiguousarray(self.data[np.asarray(rows, dtype=np.int64)])
        if len(raw) == 0:
            return np.empty(0, dtype=np.float32)
        scratch = faiss.IndexScalarQuantizer(EMBED_DIM, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        scratch.add_sa_codes(raw.view(np.uint8))
        D, order = scratch.search(np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1), len(raw))
        out = np.empty(len(raw), dtype=np.float32)
        out[order[0]] = D[0]
        return out


def open_store(folder: Path, entry: dict | None, n: int, rebuild: str = "rebuild the index") -> ExactStore | None:
    """The store a manifest's ``store`` entry describes (None when the index has none); checks kind,
    dtype and shape against ``n`` rows. The caller has checked sizes and checksums. ``rebuild``:
    the command that rebuilds the index, for the messages."""
    if not entry:
        return None
    kind = entry.get("kind")
    fix = f"{rebuild}, or open it with Geolocator(..., use_store=False) to re-rank with the encoder"
    if kind not in KINDS:
        raise IndexDirError(f"{folder}/manifest.json names an exact store of kind {kind!r}, not one of "
                            f"{', '.join(KINDS)}: {fix}")
    try:
        data = np.load(folder / STORE, mmap_mode="r")
        params = np.load(folder / SQ8_PARAMS) if kind == "sq8" else None
    except (OSError, ValueError) as e:
        raise IndexDirError(f"{folder / STORE} cannot be read as an exact store ({e}): {fix}") from e
    if data.dtype != KINDS[kind] or data.shape != (n, EMBED_DIM):
        raise IndexDirError(f"{folder / STORE} holds {data.dtype} {data.shape}, the index needs {kind} "
                            f"({n}, {EMBED_DIM}): {fix}")
    if params is not None and params.shape != (2, EMBED_DIM):
        raise IndexDirError(f"{folder / SQ8_PARAMS} holds {params.shape}, not (2, {EMBED_DIM}): {fix}")
    return ExactStore(folder / STORE, kind, data, params)
