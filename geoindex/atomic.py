"""Files that appear whole or not at all: write to a hidden temporary sibling, then rename.

:func:`atomic_path` is the one way geoindex writes a file or folder that a reader or a resume may
find: the build's shards, parts, staging files and manifest, the feature cache's shards, training
checkpoints and weights, ``geoindex embed``'s output. A failed write removes its temporary, and an
``OSError`` of a full disk or a read-only/forbidden path becomes one :class:`WriteError` line naming
the file and the fix.

The temporary of ``DIR/name`` is ``DIR/.name.tmp``: always the same name, so a run killed by SIGKILL
(which no handler sees) leaves at most that one file, which the next run replaces or removes
(:func:`remove_stale`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from geoindex.errors import GeoindexError, WriteError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_ALLOWED = (errno.EACCES, errno.EPERM, errno.EROFS)


def temp_path(path: str | Path) -> Path:
    """The temporary sibling ``path`` is written as before its rename: ``DIR/.name.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def remove_stale(path: str | Path) -> None:
    """Remove what a killed writer of ``path`` left (its temporary, file or folder)."""
    _remove(temp_path(path))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_error(path: str | Path, e: BaseException, fix: str | None = None) -> WriteError | None:
    """The one-line error for a failed write of ``path`` (a full disk, a path not ours to write),
    or None when ``e`` is another failure. FAISS reports a short write as a RuntimeError whose
    text carries strerror."""
    if isinstance(e, GeoindexError):  # already one line
        return None
    code = getattr(e, "errno", None)
    text = str(e)
    if code in DISK_FULL or "No space left on device" in text or "Disk quota exceeded" in text:
        where = Path(path).parent
        return WriteError(f"the disk is full writing {path} ({os.strerror(errno.ENOSPC)}): "
                          f"{fix or f'free space on the disk of {where} (df -h {where}), or write elsewhere'}")
    if code in NOT_ALLOWED:
        return WriteError(f"cannot write {path} ({e.strerror or e}): give a path in a folder you can write")
    return None


@contextmanager
def writing(path: str | Path, fix: str | None = None) -> Iterator[None]:
    """Turn a full disk or a forbidden path met in the block into one :class:`WriteError` line
    naming ``path`` (for files inside a folder that is itself published whole)."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        error = write_error(path, e, fix)
        if error is None:
            raise
        raise error from e


@contextmanager
def atomic_path(path: str | Path, fix: str | None = None, durable: bool = False) -> Iterator[Path]:
    """Yield the temporary to write ``path`` as (a file, or a folder the block creates); when the
    block returns, rename it to ``path`` (replacing a file there); when it raises, remove it.
    ``durable``: fsync the file before the rename (what a crash of the machine must not lose).
    ``fix``: the advice of a disk-full error (default: free space or write elsewhere)."""
    path = Path(path)
    tmp = temp_path(path)
    _remove(tmp)
    try:
        yield tmp
        if durable and tmp.is_file():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        error = write_error(path, e, fix) if isinstance(e, (OSError, RuntimeError)) else None
        if error is None:
            raise
        raise error from e


def write_text(path: str | Path, text: str, durable: bool = False, fix: str | None = None) -> None:
    """Write ``text`` to ``path`` whole (temporary, rename)."""
    with atomic_path(path, fix=fix, durable=durable) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: object, indent: int | None = 2, durable: bool = False,
               fix: str | None = None) -> None:
    """Write ``data`` as JSON (a trailing newline) to ``path`` whole."""
    write_text(path, json.dumps(data, indent=indent) + "\n", durable=durable, fix=fix)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process was so that ``finally`` blocks (temporaries) run."""


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """In the block, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) instead of ending
    the process at once, so :func:`atomic_path` removes its temporary. For the commands' main
    thread only; the previous handler is restored after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
