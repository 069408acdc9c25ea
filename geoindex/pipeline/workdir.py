"""The build's work directory beside the output (``.<name>.partial/``, for every gallery kind),
locked, resumable, published in one rename.

It holds ``build.json`` (the source's fingerprint: what the encoded shards depend on), the encoded
shards (``shards/``: cells; ``features/``: photos), the trained index and filled ``parts/`` of a
build in parts, and ``staging/`` (the index directory being written). A build that dies leaves it
behind; the same build (same fingerprint, :class:`geoindex.workstate.WorkState`) resumes from the
finished shards, and another one empties it first.

Publishing leaves nothing behind even when the process is killed during it: the work dir is
emptied of all but the index first, becomes the index directory, and the lock file is removed,
all before the one rename that publishes it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from geoindex.errors import IndexDirError
from geoindex.workstate import WorkState

STAMP = "build.json"


def work_dir_for(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file or lies under one, or a non-empty directory without
    ``overwrite``: the one check of every gallery kind's output (cells, CSV rows, photos)."""
    if out.exists() and not out.is_dir():
        raise IndexDirError(f"--out {str(out)!r} is a file, not a directory: give a directory path")
    above = next((p for p in out.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise IndexDirError(f"--out {str(out)!r} lies under {str(above)!r}, which is a file, not a directory: "
                            "give a path under a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise IndexDirError(
            f"--out {str(out)!r} exists and is not empty: pass --overwrite to replace it, "
            "or choose another directory"
        )


class WorkLock:
    """An exclusive lock on the work dir for this process's lifetime (one builder per DIR):
    ``flock`` on ``<work>.lock``, and on the work dir itself while it is published. ``out``: the
    directory being built (default: the cell build's, from its ``.<name>.partial`` work dir)."""

    def __init__(self, work: Path, out: Path | None = None):
        self.work = work
        out = out if out is not None else work.parent / work.name[1:-len(".partial")]
        self.path = work.parent / f"{work.name}.lock"
        try:
            work.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a+")
        except OSError as e:
            raise IndexDirError(
                f"cannot write the index beside {str(work.parent)!r} ({e.strerror or e}: "
                f"{e.filename or self.path}): give an --out in a directory you can write"
            ) from None
        self.dir_fd: int | None = None
        if not _try_flock(self.handle.fileno()) or _busy(work):
            self.handle.close()
            raise IndexDirError(
                f"another build_index is writing {out} "
                f"(lock {self.path}): wait for it to finish, or stop it first"
            ) from None
        self.unlinked = False

    def hand_over(self) -> None:
        """Lock the work dir itself, then remove the lock file: the dir is about to be published."""
        self.dir_fd = os.open(self.work, os.O_RDONLY)
        _try_flock(self.dir_fd)
        self.path.unlink(missing_ok=True)
        self.unlinked = True

    def release(self) -> None:
        if not self.unlinked:
            self.path.unlink(missing_ok=True)
        self.handle.close()
        if self.dir_fd is not None:
            os.close(self.dir_fd)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _busy(work: Path) -> bool:
    """Whether another build holds the work dir itself (it is publishing it)."""
    try:
        fd = os.open(work, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not _try_flock(fd)
    finally:
        os.close(fd)


def prepare_work_dir(work: Path, out: Path, fingerprint: dict, subdirs: tuple[str, ...] = ("shards",)) -> bool:
    """Create or reuse the work dir of ``out``; True when it holds work of ``fingerprint`` (resume).
    A work dir of another fingerprint (or none: a publish killed half way) is emptied first, and
    what a killed publish left of an old ``out`` is removed."""
    for old in out.parent.glob(f".{out.name}.old-*"):  # a killed publish's old index
        shutil.rmtree(old, ignore_errors=True)
    return WorkState(work, STAMP).resume_or_restart(fingerprint, subdirs=subdirs)


def fresh_staging(work: Path) -> Path:
    """An empty ``staging/`` in the work dir, for the index directory being written."""
    staging = work / "staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def publish(work: Path, staging: Path, out: Path, lock: WorkLock) -> None:
    """Make the finished ``staging`` the index directory ``out``: drop the rest of the work dir
    (shards, parts), move staging's files up into it, remove the lock file, then rename the work
    dir to ``out`` (an old index is set aside and removed only after that)."""
    for child in work.iterdir():
        if child != staging:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for child in staging.iterdir():
        os.replace(child, work / child.name)
    staging.rmdir()
    lock.hand_over()
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
