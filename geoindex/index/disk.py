"""Inverted lists on disk (``lists.ivfdata``): which indexes can have them, the refusal when one
cannot, and the rule that sends them there when nobody asked. One set of decisions for every
gallery kind (the cell build in :mod:`geoindex.pipeline`, the photo build in :mod:`geoindex.photos`).
"""

from __future__ import annotations

import os

import faiss

from geoindex.errors import InvalidArgumentError

LISTS_IN_MEMORY_SHARE = 0.5  # auto: lists go to disk when they would take over half of this machine's memory


def lists_mappable(index: faiss.Index) -> bool:
    """Whether ``index`` is an IVF index whose inverted lists can live in ``lists.ivfdata``
    (fast-scan lists are packed for SIMD and cannot be mapped)."""
    return isinstance(index, faiss.IndexIVF) and "FastScan" not in type(index).__name__


def unmappable_error(factory: str, example: str = "IVF1024,PQ32") -> InvalidArgumentError:
    """The refusal of ``--lists-on-disk`` for ``factory``, whose lists FAISS cannot map from disk;
    ``example``: a factory of this gallery kind that can."""
    return InvalidArgumentError(
        f"--lists-on-disk needs an IVF index whose lists FAISS can map from disk; {factory} has none (Flat, "
        f"HNSW) or packs them for SIMD (fast-scan PQ..x4fs): drop --lists-on-disk, or give e.g. --factory {example}")


def memory_bytes() -> int:
    """This machine's physical memory, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def lists_bytes(index: faiss.Index, n: int) -> int:
    """What the inverted lists of ``index`` (an IVF index, maybe behind a transform) take for ``n``
    vectors: their codes and 8-byte ids."""
    return n * (faiss.extract_index_ivf(index).code_size + 8)


def too_big_for_memory(lists_bytes: int) -> bool:
    """The auto rule: lists of ``lists_bytes`` (codes and 8-byte ids) go to disk when they would take
    over :data:`LISTS_IN_MEMORY_SHARE` of this machine's memory."""
    return lists_bytes > LISTS_IN_MEMORY_SHARE * memory_bytes()


def lists_on_disk(asked: bool | None, mappable: bool, lists_bytes: int, factory: str,
                  example: str = "IVF1024,PQ32") -> bool:
    """Whether an index's lists go to disk: as ``asked`` (refused when not ``mappable``), else (None)
    by :func:`too_big_for_memory` for a mappable index, never for another."""
    if asked and not mappable:
        raise unmappable_error(factory, example)
    if asked is not None or not mappable:
        return bool(asked)
    return too_big_for_memory(lists_bytes)
