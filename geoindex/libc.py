"""glibc's memory return, for the processes that free large blocks and must not keep them (Linux only).

glibc serves a freed block under its dynamic mmap threshold (which grows to 32 MB after large frees)
from its arenas, and keeps it there: the process's anonymous memory stays at its peak although the
arrays are gone. :func:`pin_mmap_threshold` fixes the threshold at 1 MiB, so large buffers are
mapped and unmapped; :func:`trim` gives the arenas' free pages back now. Elsewhere both do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys

M_MMAP_THRESHOLD = -3
PINNED_THRESHOLD = 1 << 20


@functools.cache
def libc():
    """glibc through ctypes, or None (not Linux, or no C library found)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def pin_mmap_threshold() -> None:
    """Blocks over 1 MiB are mapped and unmapped from now on (no dynamic growth of the threshold)."""
    lib = libc()
    if lib is not None:
        with contextlib.suppress(Exception):
            lib.mallopt(M_MMAP_THRESHOLD, PINNED_THRESHOLD)


def trim() -> None:
    """Give the arenas' free pages back to the system."""
    lib = libc()
    if lib is not None:
        with contextlib.suppress(Exception):
            lib.malloc_trim(0)
