"""Decoding uploads within a memory budget: small, since CLIP sees 224 px.

A 186 KB PNG of 7999x7999 decodes to 256 MB (PIL keeps RGB in 4 bytes a pixel), so what an upload
costs is its decoded size, known from the header before any decoding. Each request's images may
decode to at most ``max_decoded_bytes`` in all (else 413 naming the limit), and the server holds
at most ``server_decoded_bytes`` of decoded pixels at once (:class:`DecodeBudget`: a request waits
for room). Each image is decoded as small as its format allows and never smaller than CLIP's
224 px on its short side: JPEG in draft mode (the decoder's DCT scaling, 1/2 to 1/8, so a 64 MP
JPEG decodes to ~1 MP), any other format decoded whole and at once reduced by an integer factor
(``Image.reduce``), so what stays in memory until the encoder runs is small.

Freed image buffers go back to the system: glibc keeps freed blocks under its dynamic mmap
threshold (up to 32 MB, and PIL allocates 16 MB blocks) in its arenas, which made the server's
RSS stay at its peak; :class:`MemoryReturn` pins the threshold at 1 MB (:mod:`geoindex.libc`), so image buffers are
mapped and unmapped, and trims the arenas after large decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import warnings

from PIL import Image, ImageOps

from geoindex.encoders.images import load_image, to_rgb
from geoindex.errors import ImageTooLargeError, InvalidImageError
from geoindex.libc import pin_mmap_threshold, trim

CLIP_SIDE = 224  # the encoder's input: no decode needs a short side above this
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}  # else 4 (PIL's RGB is 4)


def header_size(data: bytes) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """(format, (width, height), decoded (width, height)) from the header alone: JPEGs decode at
    the draft size that keeps the short side >= 224, other formats at full size. Unreadable data
    gives ``("", (0, 0), (0, 0))`` (the decoder then says what is wrong with it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            size = img.size
            if img.format == "JPEG":
                img.draft("RGB", _draft_request(size))
            return img.format or "", size, img.size
    except Exception:  # noqa: BLE001 (any parse failure: the real decode reports it in words)
        return "", (0, 0), (0, 0)


def _draft_request(size: tuple[int, int]) -> tuple[int, int]:
    """The size to ask JPEG draft mode for: the image scaled so its short side is 224 (draft picks
    the smallest DCT scale at or above it)."""
    w, h = size
    scale = CLIP_SIDE / max(1, min(w, h))
    return (max(1, int(w * scale + 0.999)), max(1, int(h * scale + 0.999))) if scale < 1 else (w, h)


def decoded_bytes(data: bytes) -> int:
    """Bytes the decode of ``data`` holds at its peak (its decoded size), from the header."""
    with contextlib.suppress(Exception):
        img = Image.open(io.BytesIO(data))
        _, _, (w, h) = header_size(data)
        return w * h * _BYTES_PER_PIXEL.get(img.mode, 4)
    return 0


def decode_small(data: bytes, *, max_pixels: int, name: str) -> Image.Image:
    """An upload -> an RGB image whose short side is >= 224 and as small as its format allows
    (JPEG draft mode, else ``Image.reduce`` right after decoding); the same checks and errors as
    :func:`geoindex.encoders.images.load_image`."""
    fmt, _, _ = header_size(data)
    img = _decode_jpeg(data, max_pixels, name) if fmt == "JPEG" else load_image(data, max_pixels=max_pixels, name=name)
    factor = min(img.size) // CLIP_SIDE
    return img.reduce(factor) if factor >= 2 else img


def _decode_jpeg(data: bytes, max_pixels: int, name: str) -> Image.Image:
    """A JPEG decoded in draft mode (DCT scaling), upright per EXIF, RGB; load_image's errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels is the guard
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageTooLargeError(
                    f"image {name!r} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}: downscale "
                    "it (the model sees 224x224) or raise the pixel limit")
            img.draft("RGB", _draft_request(img.size))
            img.load()
    except ImageTooLargeError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"image {name!r} looks like a decompression bomb ({e}): downscale it") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(f"image {name!r} is damaged or truncated ({e}): send the complete file") from e
    return to_rgb(ImageOps.exif_transpose(img))


class DecodeBudget:
    """At most ``capacity`` bytes of decoded pixels in flight across the server; ``hold(n)`` waits
    (fairly, first come first served) until ``n`` bytes fit."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.in_use = 0
        self.peak = 0
        self._cond: asyncio.Condition | None = None

    @contextlib.asynccontextmanager
    async def hold(self, n: int):
        n = min(n, self.capacity)  # one image over the whole budget was refused earlier; never deadlock
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_use + n <= self.capacity)
            self.in_use += n
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            async with self._cond:
                self.in_use -= n
                self._cond.notify_all()


def check_request_budget(blobs: list[tuple[bytes, str]], limit: int) -> list[int]:
    """Each upload's decoded bytes; :class:`ImageTooLargeError` (413) when they sum over ``limit``."""
    costs = [decoded_bytes(data) for data, _ in blobs]
    if sum(costs) > limit:
        raise ImageTooLargeError(
            f"these {len(blobs)} images decode to {sum(costs) / 2**20:,.0f} MiB, over this server's limit of "
            f"{limit / 2**20:,.0f} MiB per request (--max-decoded-bytes {limit}): send fewer or smaller images "
            f"(the model sees {CLIP_SIDE}x{CLIP_SIDE}; a JPEG decodes smaller than a PNG of the same size)")
    return costs


_TRIM_AFTER = 64 * 2**20  # bytes decoded since the last trim


class MemoryReturn:
    """Counts decoded bytes and trims glibc's arenas once enough were freed (Linux only)."""

    def __init__(self) -> None:
        pin_mmap_threshold()
        self.since_trim = 0

    def freed(self, n: int, idle: bool) -> None:
        self.since_trim += n
        if idle and self.since_trim >= _TRIM_AFTER:
            self.since_trim = 0
            trim()
