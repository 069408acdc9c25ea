"""GeoCLIP's training augmentations on PIL images, seeded: random resized crop, horizontal flip,
colour jitter (p 0.8), greyscale (p 0.2).

The parameters are torchvision's as GeoCLIP's dataloader uses them (``RandomResizedCrop`` scale
0.08-1 and ratio 3/4-4/3; ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` in a random order). They are
written on PIL here because a CPU-only torch has no working torchvision build, and so that a view
depends only on its seed: the feature cache is the same bytes however it is batched or resumed.
The CLIP preprocessing (resize, centre crop, normalise) runs after, as on a plain image.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance

CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.4  # brightness, contrast, saturation: a factor in [1 - 0.4, 1 + 0.4]
HUE = 0.1  # a hue shift in [-0.1, 0.1] of the colour wheel
P_JITTER, P_GREY, P_FLIP = 0.8, 0.2, 0.5


def random_resized_crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A crop of 8-100% of the area with aspect 3/4-4/3 (ten tries, then the largest centred crop
    whose aspect is within the range), as torchvision's RandomResizedCrop picks it."""
    width, height = img.size
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return img.crop((left, top, left + w, top + h))
    aspect = width / height
    if aspect < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif aspect > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return img.crop((left, top, left + w, top + h))


def _shift_hue(img: Image.Image, shift: float) -> Image.Image:
    h, s, v = img.convert("HSV").split()
    hue = (np.asarray(h, dtype=np.int16) + int(round(shift * 255))) % 256
    return Image.merge("HSV", (Image.fromarray(hue.astype(np.uint8), "L"), s, v)).convert("RGB")


def colour_jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast, saturation and hue jittered, in a random order."""
    factors = rng.uniform(1 - JITTER, 1 + JITTER, size=3)
    hue = rng.uniform(-HUE, HUE)
    for op in rng.permutation(4):
        if op == 0:
            img = ImageEnhance.Brightness(img).enhance(factors[0])
        elif op == 1:
            img = ImageEnhance.Contrast(img).enhance(factors[1])
        elif op == 2:
            img = ImageEnhance.Color(img).enhance(factors[2])
        else:
            img = _shift_hue(img, hue)
    return img


def augment(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One augmented view of an RGB image."""
    img = random_resized_crop(img, rng)
    if rng.random() < P_FLIP:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < P_JITTER:
        img = colour_jitter(img, rng)
    if rng.random() < P_GREY:
        img = img.convert("L").convert("RGB")
    return img


def view_rng(seed: int, row: int, view: int) -> np.random.Generator:
    """The generator of one view of one photo: the same whatever the batching, order or resume."""
    return np.random.default_rng([seed, row, view])
