"""Cheap structural checks of an opened index: what a flipped byte in a file too large to checksum
at open would break, caught before the first query instead of answered as wrong places.

Checked (each reads the arrays once, in slices; ~0.1 s for a res-7 index's 29M cells):
``hot/cell.npy`` strictly increasing and, for H3 galleries, valid H3 ids at the gallery's
resolution; ``hot/lat.npy`` and ``hot/lng.npy`` finite and in range; the string codes
(``hot/country.npy``, ``admin1.npy``, ``place.npy``) inside their value lists; the FAISS index's ``ntotal``
equal to the manifest's and the table's; for IVF indexes, the list sizes summing to ``ntotal`` and
a sample of the lists' ids all present in the table (zeroed on-disk lists hold id 0 everywhere).
The full SHA-256 of every file is :func:`geoindex.store.manifest.verify_checksum`'s job.
"""

from __future__ import annotations

import numpy as np

from geoindex.errors import IndexDirError
from geoindex.store.manifest import IndexDir, rebuild_hint

SLICE = 1 << 22  # rows per slice: bounded temporaries on a memory-mapped column
SAMPLED_LISTS = 8


def _corrupt(index_dir: IndexDir, name: str, what: str) -> IndexDirError:
    return IndexDirError(f"{index_dir.path / name} is corrupt ({what}): "
                         f"{rebuild_hint(index_dir.path, index_dir.manifest)}")


def _valid_h3(cell: np.ndarray, resolution: int) -> np.ndarray:
    """(n,) bool: ids that are H3 cells (mode 1, reserved bits 0, base cell < 122) at ``resolution``,
    with the digits below it unused (7)."""
    cell = np.asarray(cell, dtype=np.int64)
    unused = 0
    for r in range(resolution + 1, 16):
        unused |= 7 << (3 * (15 - r))
    return (((cell >> 59) & 0xF) == 1) & (((cell >> 52) & 0xF) == resolution) \
        & (((cell >> 45) & 0x7F) < 122) & ((cell & np.int64(unused)) == unused) & (cell > 0)


def check_table(index_dir: IndexDir, table) -> None:
    """Refuse a cell table (:class:`geoindex.store.cell_table.CellTable`) whose ids are unsorted or
    not H3 cells of the gallery's resolution, or whose coordinates are out of range."""
    n = len(table)
    count = index_dir.manifest["gallery"].get("count", n)
    if n != count:
        raise _corrupt(index_dir, "hot/cell.npy", f"{n:,} cells, the manifest says {count:,}")
    res = index_dir.resolution
    for start in range(0, n, SLICE):
        stop = min(n, start + SLICE)
        cell = np.asarray(table.cell[start:min(n, stop + 1)])
        if np.any(cell[1:] <= cell[:-1]):
            raise _corrupt(index_dir, "hot/cell.npy", f"ids not strictly increasing near row {start:,}")
        if res is not None and not np.all(_valid_h3(cell, res)):
            bad = start + int(np.argmin(_valid_h3(cell, res)))
            raise _corrupt(index_dir, "hot/cell.npy", f"row {bad:,} holds {int(cell[bad - start])}, not an H3 "
                                                      f"cell at resolution {res}")
        for name, codes in table.codes.items():  # a code past its values answers IndexError mid-query
            chunk = np.asarray(codes[start:stop])
            if len(chunk) and (int(chunk.min()) < 0 or int(chunk.max()) >= len(table.values[name])):
                raise _corrupt(index_dir, f"hot/{name}.npy", f"a code outside 0..{len(table.values[name]) - 1} "
                                                            f"near row {start:,}")
        for name, column, limit in (("lat", table.lat, 90.0), ("lng", table.lng, 180.0)):
            values = np.asarray(column[start:stop])
            if not np.all(np.abs(values) <= limit):  # NaN fails this too
                raise _corrupt(index_dir, f"hot/{name}.npy", f"a {name} outside [-{limit:g}, {limit:g}] "
                                                            f"near row {start:,}")


def check_index(index_dir: IndexDir, index, table) -> None:
    """Refuse a FAISS index whose ``ntotal`` or inverted lists disagree with the manifest and the
    table."""
    ntotal = int(index.ntotal)
    if ntotal != index_dir.ntotal or ntotal != len(table):
        raise _corrupt(index_dir, "vectors.faiss", f"ntotal {ntotal:,}, the manifest says {index_dir.ntotal:,} "
                                                  f"and the cell table holds {len(table):,}")
    lists_file = "lists.ivfdata" if (index_dir.path / "lists.ivfdata").is_file() else "vectors.faiss"
    problem = check_lists(index, lambda ids: table.rows(ids) >= 0, "the cell table")
    if problem:
        raise _corrupt(index_dir, "vectors.faiss" if problem.startswith("its") else lists_file, problem)


def check_lists(index, known, table_name: str) -> str | None:
    """What is wrong with an IVF index's inverted lists, or None: the list sizes must sum to
    ``ntotal`` and the ids of ``SAMPLED_LISTS`` lists must all be ``known`` (``(n,) int64 ->
    (n,) bool``; zeroed on-disk lists hold id 0 everywhere). A message starting "its" is about
    vectors.faiss, another about the lists' file. Used by cell indexes and photo galleries."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    ntotal = int(index.ntotal)
    invlists = ivf.invlists
    sizes = np.array([invlists.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)
    if int(sizes.sum()) != ntotal:
        return f"its inverted lists hold {int(sizes.sum()):,} vectors, ntotal is {ntotal:,}"
    nonempty = np.flatnonzero(sizes)
    if not len(nonempty):
        return None
    for lst in nonempty[np.linspace(0, len(nonempty) - 1, min(SAMPLED_LISTS, len(nonempty))).astype(int)]:
        size = int(sizes[lst])
        ptr = invlists.get_ids(int(lst))
        try:
            ids = faiss.rev_swig_ptr(ptr, size).copy()
        finally:
            invlists.release_ids(int(lst), ptr)
        if not np.all(known(ids)):
            return f"inverted list {int(lst)} holds ids that are not in {table_name}"
    return None
