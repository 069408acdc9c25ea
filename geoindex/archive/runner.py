"""The resumable run: photos found -> rows committed in parts -> the results file assembled.

Checks come first and cost nothing (``--out`` writable and not a file of the user's,
photos found, saved progress made with the
same settings); the index and the models load only when there is something new to locate. Rows
are committed every ``commit_rows`` photos or ``commit_seconds``, whichever comes first, so a run
killed with ``kill -9`` loses at most that much work; Ctrl-C commits what is done and assembles
the file before it stops.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from geoindex.archive.parts import PartStore
from geoindex.archive.pipeline import Decoded, ahead, decode, decoded_batches, model_sized
from geoindex.archive.rows import error_row, exif_row, located_row, provenance, schema, stamp
from geoindex.archive.walk import find_photos
from geoindex.archive.writers import assemble, check_ours, check_writable
from geoindex.errors import GeoindexError



class StrictStop(GeoindexError, RuntimeError):
    """``--strict``: a photo could not be located (the rows before it are saved)."""


@dataclass
class ArchiveConfig:
    """One archive run. ``exif``: ``compare`` (locate every photo, report its EXIF position beside)
    or ``trust`` (a photo with an EXIF position is reported there; the model skips it)."""

    out: Path
    inputs: list[Path] = field(default_factory=list)
    from_list: Path | None = None
    exif: str = "compare"
    strict: bool = False
    restart: bool = False
    overwrite: bool = False  # replace an --out that is not this command's results table
    batch_size: int = 32
    workers: int = 4
    max_pixels: int = 64_000_000
    commit_rows: int = 256
    commit_seconds: float = 30.0
    progress: bool = True


@dataclass
class ArchiveSummary:
    out: str
    photos: int  # rows in the results file
    new: int  # rows this run added
    errors: int  # of those, rows with an error
    from_exif: int  # of those, rows from the EXIF position (--exif trust)
    seconds: float  # the whole run, loading the index and the models included
    photos_per_s: float | None = None  # new photos per second once the models are loaded
    interrupted: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class _Batcher:
    """Decoded photos -> rows: the model for those that need it, EXIF or errors for the rest."""

    def __init__(self, config: ArchiveConfig, geolocator, options, load_encoder: Callable):
        self.config, self.geolocator, self.options = config, geolocator, options
        self.load_encoder = load_encoder
        self.encoder = None
        self.load_s = 0.0  # loading the model, inside the pipeline's time: not the pipeline's pace
        self.with_confidence = options.confidence is not None

    def rows(self, batch: list[Decoded]) -> list[dict]:
        out: dict[int, dict] = {}
        todo = []
        for i, d in enumerate(batch):
            if d.error is not None:
                out[i] = error_row(d.path, d.error, d.exif, self.with_confidence)
            elif d.image is None:  # trusted EXIF position
                out[i] = exif_row(d.path, d.exif, self.with_confidence, self.geolocator.resolution)
            else:
                todo.append(i)
        if todo:
            for i, row in zip(todo, self._locate([batch[i] for i in todo])):
                out[i] = row
        return [out[i] for i in range(len(batch))]

    def _locate(self, photos: list[Decoded]) -> list[dict]:
        if self.encoder is None:
            t = time.monotonic()
            self.encoder = self.load_encoder()
            self.load_s = time.monotonic() - t
        try:
            xq = self.encoder.encode_images([d.image for d in photos])
        except Exception:  # noqa: BLE001 -- one bad image must not fail its batch-mates: one at a time
            if len(photos) == 1:
                raise
            return [row for d in photos for row in self._locate_one(d)]
        results = self.geolocator.locate(xq, self.options)
        return [located_row(d.path, r, d.exif, self.with_confidence) for d, r in zip(photos, results)]

    def _locate_one(self, d: Decoded) -> list[dict]:
        try:
            return self._locate([d])
        except Exception as e:  # noqa: BLE001
            return [error_row(d.path, f"{d.path!r} could not be encoded ({type(e).__name__}: {e})", d.exif,
                              self.with_confidence)]


def _bar(config: ArchiveConfig, total: int, done_before: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="photo", file=sys.stderr, disable=not config.progress, dynamic_ncols=True,
                desc=f"locate ({done_before:,} done before)" if done_before else "locate", smoothing=0.1)


@dataclass
class _Counts:
    new: int = 0
    errors: int = 0
    from_exif: int = 0
    pipeline_s: float = 0.0

    def add(self, rows: list[dict]) -> None:
        self.new += len(rows)
        self.errors += sum(1 for r in rows if r["error"])
        self.from_exif += sum(1 for r in rows if r["source"] == "exif")


def run_archive(config: ArchiveConfig, settings: dict, open_geolocator: Callable, load_encoder: Callable,
                options, located: Callable | None = None) -> ArchiveSummary:
    """Locate every photo of ``config`` not yet in ``config.out`` and (re)assemble it.

    ``settings``: what makes rows comparable (index, models, options; saved beside the parts: a
    later run with other settings is refused); ``open_geolocator()`` -> Geolocator;
    ``load_encoder()`` -> ImageEncoder (called once, only if a photo needs the model). Ctrl-C
    returns with ``interrupted`` set; ``--strict`` raises StrictStop; both after saving.
    ``located(todo)`` -> iterator of row lists for those paths, in any order: where the rows are
    made (:func:`geoindex.archive.distributed.located_on_ray`); None: in this process."""
    t0 = time.perf_counter()
    check_writable(config.out)
    check_ours(config.out, config.overwrite)
    photos = [str(p) for p in find_photos(config.inputs, config.from_list)]
    table_schema = schema(options.confidence is not None, provenance(settings))
    counts, interrupted, stop = _Counts(), False, None
    with PartStore(config.out, settings, restart=config.restart) as store:
        done = store.done_paths()
        todo = [p for p in photos if p not in done]
        if todo:
            batcher = None
            try:
                if located is None:
                    batcher = _Batcher(config, open_geolocator(), options, load_encoder)
                    rows = _located_here(config, todo, batcher)
                else:
                    rows = located(todo)
                _commit_all(config, rows, len(todo), len(photos) - len(todo), store, table_schema, counts)
            except KeyboardInterrupt:
                interrupted = True
            except StrictStop as e:
                stop = e
            counts.pipeline_s -= batcher.load_s if batcher is not None else 0.0  # the model loads lazily, inside it
        total = assemble(store.parts(), config.out, table_schema)
    if stop is not None:
        raise stop
    rate = round(counts.new / counts.pipeline_s, 3) if counts.pipeline_s > 0 else None
    return ArchiveSummary(str(config.out), total, counts.new, counts.errors, counts.from_exif,
                          round(time.perf_counter() - t0, 3), rate, interrupted)


def reader(config: ArchiveConfig, batcher: _Batcher) -> Callable[[str], Decoded]:
    """The decode step for ``config``; loads the model first when every photo needs it (``--exif
    compare``), to decode to its size; with ``--exif trust``, at the first photo without GPS."""
    batcher.geolocator.check_options(batcher.options)
    shrink = None
    if config.exif != "trust":  # every photo needs the model: load it now, and decode to its size
        batcher.encoder = batcher.load_encoder()
        shrink = model_sized(batcher.encoder.preprocess)
    return partial(decode, max_pixels=config.max_pixels, shrink=shrink, skip_gps=config.exif == "trust")


def _located_here(config: ArchiveConfig, todo: list[str], batcher: _Batcher):
    """Row lists for ``todo`` in this process, in order: decode, encode+search and the caller overlap."""
    return ahead(decoded_batches(todo, reader(config, batcher), config.batch_size, config.workers), batcher.rows)


def _commit_all(config: ArchiveConfig, located, todo: int, done_before: int, store: PartStore, table_schema,
                counts: _Counts) -> None:
    """Row lists as they come from ``located``, committed in parts, and on any exit."""
    pending: list[dict] = []
    started = last_commit = time.monotonic()
    bar = _bar(config, todo, done_before)
    try:
        for rows in located:
            rows = stamp(rows, table_schema)
            bad = next((i for i, r in enumerate(rows) if r["error"]), None)
            if bad is not None and config.strict:
                pending += rows[:bad]
                counts.add(rows[:bad])
                raise StrictStop(f"--strict: {rows[bad]['error']} (the {counts.new:,} rows before it are saved)")
            pending += rows
            counts.add(rows)
            bar.update(len(rows))
            if len(pending) >= config.commit_rows or time.monotonic() - last_commit >= config.commit_seconds:
                store.commit(pending, table_schema)
                pending, last_commit = [], time.monotonic()
    finally:
        bar.close()
        if hasattr(located, "close"):  # a generator: stop its workers (threads, Ray actors) now
            located.close()
        store.commit(pending, table_schema)  # Ctrl-C and --strict too: what is done is saved
        counts.pipeline_s = time.monotonic() - started
