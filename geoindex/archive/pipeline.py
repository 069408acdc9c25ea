"""Photos -> decoded, model-sized images on a thread pool, in order, in batches.

Workers read each file once: the EXIF comes from its bytes, the pixels from
:func:`geoindex.encoders.images.load_image` (EXIF orientation, pixel limit), and the image is then
shrunk to what CLIP sees (:func:`model_sized`) so that a batch of 12-megapixel photos waiting for
the model holds 150 KB each, not 36 MB. :func:`ahead` then runs the model and the search on a
thread of their own, one batch ahead of the caller, so that committing rows (Parquet parts) overlaps
the next batch's encoding: decode, encode+search and writing each have a thread. At most
``4 * batch_size + workers`` photos are in flight: memory stays flat however long the list. A file
that cannot be read or decoded becomes a :class:`Decoded` with an ``error``, never an exception.
"""

from __future__ import annotations

import os
from collections import deque
from contextlib import closing
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from geoindex.archive.exif import PhotoExif, read_exif
from geoindex.encoders.images import DEFAULT_MAX_PIXELS, crop_to_aspect, load_image
from geoindex.errors import GeoindexError

T, R = TypeVar("T"), TypeVar("R")
MAX_FILE_BYTES = 512 * 1024 * 1024  # no photo is larger; a bigger file is refused before it is read


@dataclass
class Decoded:
    """One photo after the workers: ``image`` (model-sized RGB, or None when it is not needed or
    could not be read), its ``exif``, and ``error`` (None when fine)."""

    path: str
    image: Image.Image | None
    exif: PhotoExif
    error: str | None = None


def model_sized(preprocess) -> Callable[[Image.Image], Image.Image]:
    """The resize and centre-crop steps of a CLIP ``preprocess`` (its ``shrink``, or the leading
    steps of a torchvision Compose),
    after the encoder's own aspect crop: their output goes through ``preprocess`` unchanged (a
    resize to the size an image already has is a copy), so embeddings are identical to those of
    the full image. Identity when ``preprocess`` does not start with such steps."""
    if callable(getattr(preprocess, "shrink", None)):  # geoindex's own ClipPreprocess
        return preprocess.shrink
    from geoindex.encoders.torchvision_compat import import_torchvision

    transforms = import_torchvision().transforms
    steps = []
    for t in getattr(preprocess, "transforms", []):
        if not isinstance(t, (transforms.Resize, transforms.CenterCrop)):
            break
        steps.append(t)

    def shrink(img: Image.Image) -> Image.Image:
        if not steps:
            return img
        img = crop_to_aspect(img)
        for t in steps:
            img = t(img)
        return img

    return shrink


def decode(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, shrink=None, skip_gps: bool = False) -> Decoded:
    """Read one photo. ``skip_gps``: a photo with an EXIF position is not decoded (``--exif trust``)."""
    try:
        size = os.stat(path).st_size
        if size > MAX_FILE_BYTES:
            return Decoded(path, None, PhotoExif(), f"{path!r} is {size:,} bytes, over the limit of "
                           f"{MAX_FILE_BYTES:,}: is it a photo? downscale it")
        data = Path(path).read_bytes()
    except OSError as e:
        return Decoded(path, None, PhotoExif(), f"{path!r} cannot be read ({e.strerror or e}): check it exists "
                       "and is readable")
    exif = read_exif(data)
    if skip_gps and exif.has_gps:
        return Decoded(path, None, exif)
    try:
        image = load_image(data, max_pixels=max_pixels, name=path)
        return Decoded(path, shrink(image) if shrink else image, exif)
    except GeoindexError as e:
        return Decoded(path, None, exif, str(e))
    except Exception as e:  # noqa: BLE001 -- a decoder bug on one file must not stop an archive
        return Decoded(path, None, exif, f"{path!r} could not be decoded ({type(e).__name__}: {e})")


def _in_order(pool: ThreadPoolExecutor, work: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """``work(item)`` for each item on ``pool``, at most ``window`` submitted ahead of the consumer;
    results in order. An exception in ``work`` is raised where its result is taken; on exit (the end,
    an error, Ctrl-C) queued items are cancelled, the running ones waited for, and the pool shut down."""
    pending: deque[Future] = deque()
    it = iter(items)
    try:
        while True:
            while len(pending) < window:
                item = next(it, None)
                if item is None:
                    break
                pending.append(pool.submit(work, item))
            if not pending:
                break
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def decoded_batches(paths: Iterable[str], read: Callable[[str], Decoded], batch_size: int,
                    workers: int) -> Iterator[list[Decoded]]:
    """``read`` each path on ``workers`` threads; yield lists of ``batch_size`` Decoded, in path order."""
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="decode")
    batch: list[Decoded] = []
    with closing(_in_order(pool, read, paths, 2 * batch_size + workers)) as decoded:  # closed with this one
        for one in decoded:
            batch.append(one)
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def ahead(items: Iterable[T], work: Callable[[T], R], depth: int = 1) -> Iterator[R]:
    """``work(item)`` for each item on one background thread, up to ``depth`` items ahead of the
    consumer; results in order. An exception in ``work`` is raised where its result is taken; on
    exit (the end, an error, Ctrl-C) queued items are cancelled and the running one is waited for."""
    yield from _in_order(ThreadPoolExecutor(1, thread_name_prefix="encode"), work, items, depth + 1)
