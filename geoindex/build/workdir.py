"""The build's work directory: ``.<name>.partial/`` beside the output, locked, resumable, published
in one rename.

It holds ``build.json`` (the fingerprint of what the shards depend on), ``shards/`` (finished shard
files) and ``staging/`` (the index directory being written). A build that dies leaves it behind;
the same command finds the same fingerprint and resumes from the finished shards.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path

from geoindex.errors import IndexDirError

log = logging.getLogger(__name__)


def work_dir_for(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file or lies under one, or a non-empty directory without
    ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise IndexDirError(f"--out {str(out)!r} is a file: give a directory path")
    above = next((p for p in out.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise IndexDirError(f"--out {str(out)!r} lies under {str(above)!r}, which is a file, not a directory: "
                            "give a path under a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise IndexDirError(
            f"--out {str(out)!r} exists and is not empty: pass --overwrite to replace it, "
            "or choose another directory"
        )


def lock_work_dir(work: Path):
    """Hold an exclusive lock on the work dir for this process's lifetime (one builder per DIR)."""
    lock_path = work.parent / f"{work.name}.lock"
    try:
        work.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+")
    except OSError as e:
        raise IndexDirError(
            f"cannot write the index beside {str(work.parent)!r} ({e.strerror or e}: "
            f"{e.filename or lock_path}): give an --out in a directory you can write"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise IndexDirError(
            f"another build_index is writing {work.parent / work.name[1:-len('.partial')]} "
            f"(lock {lock_path}): wait for it to finish, or stop it first"
        ) from None
    return handle


def prepare_work_dir(work: Path, fingerprint: dict) -> int:
    """Create or reuse the work dir; return how many finished shards it already holds."""
    stamp = work / "build.json"
    if work.is_dir():
        try:
            previous = json.loads(stamp.read_text())
        except (OSError, ValueError):
            previous = None
        if previous == fingerprint:
            done = len(list((work / "shards").glob("*.npz")))
            if done:
                log.info("resuming: %d finished shards in %s", done, work)
            return done
        log.warning("%s holds shards of a different build (%s): starting afresh", work,
                    "no build.json" if previous is None else "options or weights changed")
        shutil.rmtree(work)
    (work / "shards").mkdir(parents=True)
    stamp.write_text(json.dumps(fingerprint, indent=2))
    return 0


def fresh_staging(work: Path) -> Path:
    """An empty ``staging/`` in the work dir, for the index directory being written."""
    staging = work / "staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def publish(staging: Path, out: Path) -> None:
    """Rename the finished staging dir to ``out`` (replacing an old index only at the last step)."""
    old = None
    if out.exists():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
