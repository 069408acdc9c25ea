"""Reading images safely: any file PIL can open, any mode, EXIF orientation, a pixel limit.

Every failure is an :class:`InvalidImageError` or :class:`ImageTooLargeError` naming the input and
the fix; a bad image never reaches the model. The pixel count is checked from the header before
any decoding, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from geoindex.errors import ImageTooLargeError, InvalidImageError

DEFAULT_MAX_PIXELS = 64_000_000  # 64 MP: larger than any phone photo, far below a bomb
# CLIP's preprocessing resizes the shortest side to 224 and keeps the central 224x224 square, so
# no image needs to reach it wider than this: beyond, the resize blows up (100000x1 -> 5 gigapixels)
MAX_ASPECT = 2.0
ImageSource = str | Path | bytes | BinaryIO


def _describe(source: ImageSource, name: str | None) -> str:
    if name:
        return repr(name)
    if isinstance(source, (str, Path)):
        return repr(str(source))
    return "the uploaded image"


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Read an image safely, as the encoders want it.

    Args:
        source: a path, the file's bytes, or a binary file object.
        max_pixels: refuse images with more pixels than this (checked from the header, before
            decoding); default 64 MP.
        name: what to call the image in error messages (default: its path).

    Returns:
        An RGB PIL image, upright per its EXIF orientation (alpha composited on white, 16-bit
        and float modes scaled to 8 bits).

    Raises:
        InvalidImageError: missing, empty, not an image, damaged or truncated.
        ImageTooLargeError: over ``max_pixels``, or a decompression bomb.
    """
    what = _describe(source, name)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"image {what} does not exist: check the path")
        data = path.read_bytes()
    elif isinstance(source, bytes):
        data = source
    else:
        data = source.read()
    if not data:
        raise InvalidImageError(f"image {what} is empty (0 bytes): upload the file's contents")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image {what} is {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,}: downscale it (the model sees 224x224) or raise the pixel limit"
                )
            img.load()
    except ImageTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(f"image {what} looks like a decompression bomb ({e}): downscale it") from e
    except UnidentifiedImageError as e:
        raise InvalidImageError(
            f"{what} is not an image PIL can read: send a JPEG, PNG, WebP, TIFF, BMP or GIF"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(f"image {what} is damaged or truncated ({e}): send the complete file") from e
    return to_rgb(ImageOps.exif_transpose(img))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: alpha composited on white, 16/32-bit and float scaled to 8 bits."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 65535.0
        else:  # 32-bit int or float: stretch what is there
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        grey = Image.fromarray(np.clip(np.nan_to_num(arr) * 255 + 0.5, 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def crop_to_aspect(img: Image.Image, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """The central part of ``img`` with width/height (or height/width) at most ``max_aspect``;
    ``img`` itself when it is already within. CLIP keeps only the central square of an image,
    so this changes what the model sees by a sub-pixel resampling shift at most, and bounds what
    its resize allocates (a 92-byte 100000x1 PNG would otherwise become 22,400,000x224 pixels)."""
    width, height = img.size
    long_side, short_side = max(width, height), max(1, min(width, height))
    if long_side <= max_aspect * short_side:
        return img
    keep = max(1, int(round(max_aspect * short_side)))
    if width > height:
        left = (width - keep) // 2
        return img.crop((left, 0, left + keep, height))
    top = (height - keep) // 2
    return img.crop((0, top, width, top + keep))
