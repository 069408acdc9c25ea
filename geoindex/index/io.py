"""Reading FAISS indexes without writing on stdout.

FAISS's C++ code prints some notices with ``printf`` (opening an index whose inverted lists are
on disk prints ``IO_FLAG_ONDISK_SAME_DIR: updating ondisk filename from ...``; growing on-disk
lists prints ``resizing ... to N bytes``). No verbose flag governs them, and a command's stdout is
its answer (``geoindex locate --format json | jq``), so :func:`stdout_to_stderr` points file
descriptor 1 at stderr while FAISS runs: the notices stay visible as logs, the answer stays clean.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

_lock = threading.Lock()  # fd 1 is process-wide: one redirection at a time


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 (C and C++ ``printf`` included) to fd 2.

    Python's own ``sys.stdout`` is flushed first so nothing written before is reordered. While
    held, another thread's writes to stdout land on stderr too: hold it only around FAISS calls.
    """
    with _lock:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            saved = os.dup(1)
        except OSError:  # no fd 1 (a daemon with stdout closed): nothing to protect
            yield
            return
        try:
            os.dup2(2, 1)
            yield
        finally:
            _flush_c_stdout()
            os.dup2(saved, 1)
            os.close(saved)


def _flush_c_stdout() -> None:
    """Flush C's stdio buffer, so text FAISS printed lands while fd 1 still points at stderr."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def read_index(path: str | Path, flags: int = 0):
    """``faiss.read_index`` with FAISS's notices on stderr, never stdout."""
    import faiss

    with stdout_to_stderr():
        return faiss.read_index(str(path), flags)
