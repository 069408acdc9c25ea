"""Committed rows of a results file: Parquet part files in a hidden folder beside it.

``results.parquet`` keeps its progress in ``.results.parquet.parts/``: ``settings.json`` (what the
rows were made with), ``lock`` (one run at a time) and ``part-<time>-<seq>.parquet`` files. A part
is written under a temporary name, flushed to disk and renamed into place, so a run killed at any
moment leaves whole parts only; the photos in them are done, and the next run skips them. The
folder stays after a run: it is how a later run over the same folder adds only the new photos.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from geoindex.atomic import atomic_path
from geoindex.errors import ResultsFileError


def parts_dir_of(out: Path) -> Path:
    return out.parent / f".{out.name}.parts"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, write) -> None:
    """``write(tmp_path)`` then fsync and rename to ``path`` (:func:`geoindex.atomic.atomic_path`),
    and fsync the folder so the rename itself survives a crash: readers see the old file or the
    new one, never half of one."""
    with atomic_path(path, durable=True) as tmp:
        write(tmp)
    _fsync_dir(path.parent)


def _differences(saved: dict, now: dict) -> list[str]:
    keys = sorted(set(saved) | set(now))
    return [f"{k}: {saved.get(k)!r} then, {now.get(k)!r} now" for k in keys if saved.get(k) != now.get(k)]


class PartStore:
    """The committed rows of one results file. Use as a context manager (it holds the lock)."""

    def __init__(self, out: Path, settings: dict, restart: bool = False):
        self.out = out
        self.dir = parts_dir_of(out)
        self.settings = settings
        self.restart = restart
        self._lock = None
        self._run = f"{time.time_ns():020d}"
        self._seq = 0

    def __enter__(self) -> PartStore:
        self.dir.mkdir(exist_ok=True)
        self._lock = open(self.dir / "lock", "a+")  # noqa: SIM115 -- held for the store's lifetime
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ResultsFileError(f"another run is writing {str(self.out)!r} now: wait for it, or give another --out")
        if self.restart:
            for part in self.parts():
                part.unlink()
            (self.dir / "settings.json").unlink(missing_ok=True)
        for tmp in self.dir.glob(".*.tmp"):  # from a run killed mid-write (geoindex.atomic.temp_path)
            tmp.unlink(missing_ok=True)
        self._check_settings()
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.close()  # closing releases the lock
            self._lock = None

    def _check_settings(self) -> None:
        path = self.dir / "settings.json"
        if path.exists() and self.parts():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                saved = {}
            if saved != self.settings:
                diff = "; ".join(_differences(saved, self.settings)) or "unreadable settings"
                raise ResultsFileError(
                    f"{str(self.out)!r} holds rows made with other settings ({diff}): give the same flags to "
                    "continue it, or --restart to start it over, or another --out")
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(self.settings, indent=2, sort_keys=True)))

    def parts(self) -> list[Path]:
        """The committed part files, oldest first."""
        return sorted(self.dir.glob("part-*.parquet"))

    def done_paths(self) -> set[str]:
        """The paths of every committed row (reads only the ``path`` column)."""
        done: set[str] = set()
        for part in self.parts():
            try:
                done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
            except (OSError, pa.ArrowException) as e:
                raise ResultsFileError(f"part file {str(part)!r} is unreadable ({e}): delete it (its photos are "
                                       "located again) and run the same command") from e
        return done

    def commit(self, rows: list[dict], schema: pa.Schema) -> None:
        """Write ``rows`` as one part file, atomically."""
        if not rows:
            return
        self._seq += 1
        table = pa.Table.from_pylist(rows, schema=schema)
        write_atomically(self.dir / f"part-{self._run}-{self._seq:06d}.parquet",
                         lambda tmp: pq.write_table(table, tmp))
