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
# CLIP's preprocessing resizes the shortest side to 224 and keeps the central 224x224 square, so an
# image more elongated than this is cropped to its centre first: otherwise the resize blows up
# (100000x1 -> 22,400,000x224 pixels). Up to 20:1 the resize output stays under 3 MB and the pixels
# equal the reference's exactly; beyond, the crop shifts its resampling grid by a fraction of a pixel.
MAX_ASPECT = 20.0
# CLIP's normalisation (OpenAI's, also transformers' OPENAI_CLIP_MEAN/STD), not ImageNet's
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
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


def crop_to_aspect(img: Image.Image, max_aspect: float | None = None) -> Image.Image:
    """The central part of ``img`` with width/height (or height/width) at most ``max_aspect``;
    ``img`` itself when it is already within. CLIP keeps only the central square of an image,
    so this changes what the model sees by a sub-pixel resampling shift at most, and bounds what
    its resize allocates (a 92-byte 100000x1 PNG would otherwise become 22,400,000x224 pixels)."""
    max_aspect = MAX_ASPECT if max_aspect is None else max_aspect
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


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the shortest side ``size`` and the longest truncated, as
    transformers' ``get_resize_output_image_size`` and torchvision's ``Resize`` both compute it."""
    short, long = min(width, height), max(width, height)
    new_long = int(size * long / short)
    return (size, new_long) if width <= height else (new_long, size)


class ClipPreprocess:
    """RGB PIL image -> (3, size, size) float32 tensor, the pixels of the reference GeoCLIP inference
    path (transformers' ``CLIPImageProcessor``, torchvision backend) to the last bit:

    1. shortest side to ``size``: torchvision's antialiased bicubic resize on the uint8 image
       (PIL's own bicubic differs by one grey level in places);
    2. centre crop ``size`` x ``size``, the offset ``int(margin / 2)``: an odd margin drops its
       extra pixel on the right/bottom (torchvision's ``CenterCrop``, which open_clip uses, rounds
       half to even instead, one pixel off when margin % 4 == 3);
    3. ``(pixel - 255 * mean) / (255 * std)`` with CLIP's mean and std.

    Images more elongated than :data:`MAX_ASPECT` are first cropped to their centre (see
    :func:`crop_to_aspect`)."""

    def __init__(self, size: int = 224):
        import torch

        self.size = int(size)
        self.mean = torch.tensor(CLIP_MEAN).view(3, 1, 1) * 255
        self.std = torch.tensor(CLIP_STD).view(3, 1, 1) * 255

    def __call__(self, img: Image.Image):
        return (self._resized_crop(img).float() - self.mean) / self.std

    def shrink(self, img: Image.Image) -> Image.Image:
        """Steps 1-2 alone: the ``size`` x ``size`` RGB image CLIP sees. Preprocessing it again
        gives the same tensor as preprocessing ``img`` (a resize to the size an image has is the
        identity), so decoding threads can hand the encoder small images."""
        return Image.fromarray(self._resized_crop(img).permute(1, 2, 0).numpy())

    def _resized_crop(self, img: Image.Image):
        """(3, size, size) uint8 tensor: the aspect crop, the resize and the centre crop."""
        import torch

        from geoindex.encoders.torchvision_compat import import_torchvision

        import_torchvision()
        from torchvision.transforms.v2 import functional as tvf

        img = crop_to_aspect(to_rgb(img))
        width, height = resized_size(*img.size, self.size)
        pixels = torch.from_numpy(np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)))  # (3, h, w) uint8
        pixels = tvf.resize(pixels, [height, width], interpolation=tvf.InterpolationMode.BICUBIC, antialias=True)
        top, left = int((height - self.size) / 2.0), int((width - self.size) / 2.0)
        return pixels[:, top : top + self.size, left : left + self.size]

    def __repr__(self) -> str:
        return f"ClipPreprocess(size={self.size})"
