"""The one gallery pipeline: encode shards -> choose and train the index -> add -> write ->
self-check -> publish, for every kind of gallery.

A gallery *source* is what differs between kinds: H3 cells or a CSV of coordinates
(:class:`geoindex.pipeline.pipeline.CellSource`), geotagged photos
(:class:`geoindex.photos.source.PhotoSource`). It has made every refusal before :func:`run` gets
it, and it encodes its gallery into shards in the work dir, chooses, trains and fills its index
(by the decisions of :mod:`geoindex.index`), writes its metadata table and says what its manifest
records. :func:`run` owns what every kind does the same way, in this order:

1. the lock on the work dir (one builder per output) and the work dir's fingerprint: the same
   fingerprint resumes from the shards there, another one empties it first (:mod:`.workdir`);
2. the driver's peak memory per stage and the seconds per step (the manifest's ``peak_memory``
   and ``timings_s``: :class:`~geoindex.pipeline.memory.StageMemory`, :class:`~.encode.Timer`);
3. ``encode`` and ``train`` in the work dir, then a fresh ``staging/`` for the output directory;
4. ``add`` into staging; ``vectors.faiss`` written, opened again as a reader opens it (lists
   mapped from the file) and checked against its own gallery (:mod:`.self_check`);
5. ``write_metadata``, then the ``manifest`` (with the self-check, timings and memory), written;
6. publish (:func:`.workdir.publish`); on any failure staging is removed (the shards stay for a
   resume), and a full disk met anywhere is one line naming the file and the source's fix.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Protocol

import faiss

from geoindex.atomic import write_error
from geoindex.index.search import SearchSettings, apply_search_settings
from geoindex.pipeline.encode import Timer
from geoindex.pipeline.memory import StageMemory
from geoindex.pipeline.self_check import CheckGallery, Search, self_check
from geoindex.pipeline.workdir import WorkLock, fresh_staging, prepare_work_dir, publish
from geoindex.pipeline.write import reopen_mapped, write_vectors
from geoindex.store.manifest import write_manifest


class GallerySource(Protocol):
    """A kind of gallery, as the pipeline drives it. ``out``: the directory to publish; ``work``:
    its work dir, whose ``work_subdirs`` hold what :meth:`encode` writes; ``seed``: the self-check's
    (and the source's samples'); ``disk_full_fix``: what a full disk's message tells the user."""

    out: Path
    work: Path
    work_subdirs: tuple[str, ...]
    seed: int
    disk_full_fix: str

    def fingerprint(self) -> dict:
        """What the work dir's shards depend on (JSON, normalised): another value starts afresh."""

    def encode(self, timer: Timer) -> None:
        """Encode the gallery into shards in ``work`` (those already there are kept); refuse an
        empty gallery."""

    def train(self, timer: Timer) -> None:
        """Choose the index for the encoded gallery and train it (in the work dir: before staging)."""

    def add(self, staging: Path, timer: Timer) -> tuple[faiss.Index, SearchSettings, bool]:
        """Fill the trained index; write into ``staging`` what a search reads besides
        ``vectors.faiss`` (lists on disk, exact store, hot columns). Returns (the index, its
        search settings, whether its lists are on disk)."""

    def check(self, index: faiss.Index, staging: Path) -> tuple[Search, CheckGallery]:
        """How a reader searches ``index`` (reopened, search settings applied), and the gallery's
        own vectors, for :func:`~geoindex.pipeline.self_check.self_check`."""

    def write_metadata(self, staging: Path, written: dict, timer: Timer) -> None:
        """Write the metadata table (and whatever else follows the self-check) into ``staging``;
        ``written``: ``ntotal`` and ``nlist`` of vectors.faiss."""

    def manifest(self, staging: Path, written: dict, check: dict, timings: dict, memory: dict) -> dict:
        """The manifest of ``staging``. ``written``: ``ntotal`` and ``nlist`` of vectors.faiss;
        ``check``: the self-check; ``timings``: seconds per step; ``memory``: peaks per stage."""


def run(source: GallerySource, started: float | None = None) -> tuple[dict, dict]:
    """Build ``source`` (or resume it) and publish it at ``source.out``; returns (its manifest,
    the self-check). ``started``: when the build began (``perf_counter``), for ``timings_s.total``."""
    started = time.perf_counter() if started is None else started
    lock = WorkLock(source.work, source.out)
    try:
        memory = StageMemory()
        try:
            return _run_locked(source, lock, Timer(memory), started)
        finally:
            memory.stop()
    except OSError as e:  # a full disk met outside the writes that name their file
        error = write_error(source.work, e, source.disk_full_fix)
        if error is None:
            raise
        raise error from e
    finally:
        lock.release()


def _run_locked(source: GallerySource, lock: WorkLock, timer: Timer, started: float) -> tuple[dict, dict]:
    prepare_work_dir(source.work, source.out, source.fingerprint(), source.work_subdirs)
    source.encode(timer)
    source.train(timer)
    staging = fresh_staging(source.work)
    try:
        check, written = _add_and_check(source, staging, timer)
        source.write_metadata(staging, written, timer)
        timer.seconds["total"] = time.perf_counter() - started
        timer.begin("manifest")
        manifest = source.manifest(staging, written, check, timer.seconds, timer.memory.record())
        write_manifest(staging, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # no half-written output left (rebuilt on resume)
        raise
    publish(source.work, staging, source.out, lock)
    return manifest, check


def _add_and_check(source: GallerySource, staging: Path, timer: Timer) -> tuple[dict, dict]:
    """Add, write vectors.faiss, and self-check the index as a reader opens it; returns (the
    check, what was written). The index leaves memory before the metadata is written."""
    index, search, on_disk = source.add(staging, timer)
    written = write_vectors(index, staging, timer, source.disk_full_fix)
    if on_disk:
        apply_search_settings(index, search)
    else:  # the check reads the codes mapped from the file just written, not from anonymous memory
        del index  # (169 MB at res 6, 1.1 GB at res 7): the kernel can drop them
        index = reopen_mapped(staging, search)
    t = timer.begin("self_check")
    searcher, gallery = source.check(index, staging)
    check = self_check(searcher, gallery, source.seed)
    timer.add("self_check", t)
    del index, searcher  # the codes leave memory before DuckDB runs
    return check, written
