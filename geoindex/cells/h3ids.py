"""Vectorised H3 id arithmetic on int64 arrays (h3-py converts one cell per call).

An H3 cell id keeps its resolution in bits 52-55 and one 3-bit digit per resolution 1..15 at
bits ``3 * (15 - r)``; digits finer than the cell's resolution are 7. Moving to a parent is
therefore pure bit work.
"""

from __future__ import annotations

import numpy as np

_RES_SHIFT = 52


def cell_resolution(cell: np.ndarray) -> np.ndarray:
    """(n,) int64 H3 ids -> (n,) int64 resolutions."""
    return (np.asarray(cell, dtype=np.int64) >> _RES_SHIFT) & 0xF


def parent_masks(parent_res: int) -> tuple[int, int]:
    """(keep, set): ``(cell & keep) | set`` is the parent at ``parent_res`` of any finer cell.
    ``keep`` clears the resolution field and the digits below ``parent_res``; ``set`` writes the
    new resolution and 7s into those digits. Python ints, usable in numpy and in SQL."""
    unused = 0
    for r in range(parent_res + 1, 16):
        unused |= 7 << (3 * (15 - r))
    keep = ~((0xF << _RES_SHIFT) | unused) & 0x7FFFFFFFFFFFFFFF
    return keep, (parent_res << _RES_SHIFT) | unused


def cell_to_parent(cell: np.ndarray, parent_res: int) -> np.ndarray:
    """(n,) int64 H3 ids at resolution >= ``parent_res`` -> (n,) int64 parent ids."""
    keep, bits = parent_masks(parent_res)
    return (np.asarray(cell, dtype=np.int64) & np.int64(keep)) | np.int64(bits)
