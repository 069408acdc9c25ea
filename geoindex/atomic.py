"""Files that appear whole or not at all: write to a hidden temporary sibling, then rename.

:func:`atomic_path` is the one way geoindex writes a file or folder that a reader or a resume may
find: the build's shards, parts, staging files and manifest, the feature cache's shards, training
checkpoints and weights, ``geoindex embed``'s output. A failed write removes its temporary, and an
``OSError`` of a full disk or a read-only/forbidden path becomes one :class:`WriteError` line naming
the file and the fix.

The temporary of ``DIR/name`` is ``DIR/.name.tmp``: always the same name, so a run killed by SIGKILL
(which no handler sees) leaves at most that one file, which the next run replaces or removes
(:func:`remove_stale`).

A file written through a memory map is allocated whole before the first write (:func:`reserve`,
``posix_fallocate``; :func:`open_memmap` does both): a full disk is then an ``ENOSPC`` error naming
the file, the bytes it needs and the bytes free, never a SIGBUS in the middle of a write. What a
library maps itself (FAISS's on-disk lists) is preceded by :func:`check_free`. Tests set
``GEOINDEX_TEST_DISK_FREE`` (bytes) to make both see a disk with that much room: the allocation
then fails with the ``ENOSPC`` a real full disk gives, through the same code.
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
TEST_FREE_ENV = "GEOINDEX_TEST_DISK_FREE"  # tests: bytes free on every disk, as allocations see it
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
    # numpy's tofile reports a short write as "N requested and M written", without an errno
    short = isinstance(e, OSError) and code is None and " requested and " in text and " written" in text
    if code in DISK_FULL or short or "No space left on device" in text or "Disk quota exceeded" in text:
        where = Path(path).parent
        free = _free_text(where)
        free = "free space unknown" if free is None else f"{free} bytes free"
        return WriteError(f"the disk is full writing {path} ({os.strerror(errno.ENOSPC)}; {free} on {where}): "
                          f"{fix or f'free space on the disk of {where} (df -h {where}), or write elsewhere'}")
    if code in NOT_ALLOWED:
        return WriteError(f"cannot write {path} ({e.strerror or e}): give a path in a folder you can write")
    return None


class DiskFullError(WriteError):
    """The disk has less room than a file needs (checked, or ``ENOSPC`` from its allocation)."""

    def __init__(self, message: str, path: str | Path | None = None, needed: int | None = None,
                 fix: str | None = None):
        super().__init__(message)
        self.path, self.needed, self.fix = path, needed, fix


def free_bytes(folder: str | Path) -> int:
    """Bytes free to this user on the disk of ``folder`` (or of its nearest existing parent; or
    ``$GEOINDEX_TEST_DISK_FREE``, if less)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    fake = os.environ.get(TEST_FREE_ENV)
    return min(free, int(fake)) if fake else free


def _free_text(folder: Path) -> str | None:
    """:func:`free_bytes` of ``folder`` with thousands separators, or None when it cannot be read."""
    try:
        return f"{free_bytes(folder):,}"
    except OSError:
        return None


def disk_full(path: str | Path, needed: int, fix: str | None = None) -> DiskFullError:
    """The one line of a full disk: the file, the bytes it needs, the bytes free, the fix."""
    where = Path(path).parent
    free = _free_text(where) or "unknown"
    return DiskFullError(f"the disk is full: {path} needs {needed:,} bytes and {free} are free on {where} "
                         f"({os.strerror(errno.ENOSPC)}): "
                         f"{fix or 'free space on that disk (df -h ' + str(where) + '), or write elsewhere'}",
                         path, needed, fix)


def check_free(path: str | Path, needed: int, fix: str | None = None) -> None:
    """Refuse now, before a library maps ``path`` and writes ``needed`` bytes through the map
    (a full disk there is SIGBUS), when the disk has less room."""
    if needed > free_bytes(Path(path).parent):
        raise disk_full(path, needed, fix)


def reserve(path: str | Path, nbytes: int, fix: str | None = None) -> None:
    """Allocate the first ``nbytes`` of the existing file ``path`` on disk now (``posix_fallocate``),
    so writes through a map of it cannot meet a full disk; :class:`DiskFullError` when they do not
    fit. File systems without fallocate get the free-space check instead."""
    fd = os.open(path, os.O_RDWR)
    try:
        fake = os.environ.get(TEST_FREE_ENV)
        if fake and nbytes - os.fstat(fd).st_blocks * 512 > int(fake):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))  # what the call gives on such a disk
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno in DISK_FULL:
            raise disk_full(path, nbytes, fix) from e
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        check_free(path, nbytes - os.fstat(fd).st_blocks * 512, fix)
    finally:
        os.close(fd)


def open_memmap(path: str | Path, dtype, shape: tuple[int, ...], fix: str | None = None):
    """``numpy.lib.format.open_memmap(path, "w+", dtype, shape)`` with the file allocated whole
    first (:func:`reserve`): a full disk is a :class:`DiskFullError` before any byte is written
    through the map. The caller removes ``path`` on error (it writes into a temporary)."""
    import numpy as np

    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    try:
        reserve(path, Path(path).stat().st_size, fix)
    except BaseException:
        del array
        Path(path).unlink(missing_ok=True)  # nothing was written through it yet
        raise
    return array


@contextmanager
def writing(path: str | Path, fix: str | None = None) -> Iterator[None]:
    """Turn a full disk or a forbidden path met in the block into one :class:`WriteError` line
    naming ``path`` (for files inside a folder that is itself published whole)."""
    try:
        yield
    except DiskFullError as e:
        if fix is None or e.path is None:
            raise
        raise disk_full(e.path, e.needed, fix) from e  # the block's advice (e.g. how to resume)
    except Exception as e:  # noqa: BLE001 -- OSError, FAISS's RuntimeError, DuckDB's own errors: by errno or text
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
        if isinstance(e, DiskFullError) and e.path is not None and Path(e.path) == tmp:
            raise disk_full(path, e.needed, fix or e.fix) from e  # the file the user named, not its temporary
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


def check_out_folder(out: str | Path, flag: str = "--out") -> None:
    """Refuse, before any model loads, an output whose folder does not exist or cannot be written
    (as ``geoindex embed`` and the archive do): no missing parents are created. A folder that is a
    file is left to the caller's own check."""
    out = Path(out)
    parent = out.absolute().parent
    if not parent.exists():
        raise WriteError(f"{flag} {str(out)!r}: folder {str(parent)!r} does not exist: create it first, or give "
                         "a path in an existing folder")
    if not parent.is_dir():
        return
    probe = parent / f".{out.name}.probe-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise WriteError(f"{flag} {str(out)!r} cannot be written ({e.strerror or e}): give a path in a folder this "
                         "user can write") from None


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
