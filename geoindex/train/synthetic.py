"""Synthetic geotagged photos whose content depends on where they were taken.

Red is the latitude, green and blue the longitude's cosine and sine (so -179 and 179 look alike),
plus noise of each photo's own. No real backbone is needed to learn them: seen through the tiny
random CLIP (``--clip-model tiny-test``) a model can learn the colour-to-place map, which the
released head cannot read. The tests and ``benchmarks/bench_train.py`` train on them; a user can
try ``geoindex-train`` end to end with ``python -m geoindex.train.synthetic DIR N``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def photo(lat: float, lng: float, rng: np.random.Generator, size: int = 64, noise: float = 6.0) -> np.ndarray:
    """(size, size, 3) uint8 RGB of a photo taken at lat, lng."""
    colour = np.array([(lat + 90) / 180 * 255, 128 + 127 * np.cos(np.radians(lng)),
                       128 + 127 * np.sin(np.radians(lng))])
    return np.clip(colour + rng.normal(0, noise, (size, size, 3)), 0, 255).astype(np.uint8)


def write_photos(folder: str | Path, n: int, seed: int = 0, size: int = 64) -> Path:
    """n PNG photos at uniform random points on the sphere in ``folder``, and ``photos.csv``
    (image,lat,lng) listing them; returns the CSV's path."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lng = rng.uniform(-180, 180, n)
    lines = ["image,lat,lng"]
    for i in range(n):
        Image.fromarray(photo(lat[i], lng[i], rng, size)).save(folder / f"{i:06d}.png")
        lines.append(f"{i:06d}.png,{lat[i]:.5f},{lng[i]:.5f}")
    (folder / "photos.csv").write_text("\n".join(lines) + "\n")
    return folder / "photos.csv"


def write_grid(path: str | Path, step: int = 10) -> Path:
    """A lat,lng CSV of a ``step``-degree grid of points: a small evaluation gallery."""
    path = Path(path)
    points = [f"{a},{b}" for a in range(-90 + step // 2, 90, step) for b in range(-180 + step // 2, 180, step)]
    path.write_text("lat,lng\n" + "\n".join(points) + "\n")
    return path


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m geoindex.train.synthetic DIR N")
    csv = write_photos(sys.argv[1], int(sys.argv[2]))
    grid = write_grid(Path(sys.argv[1]) / "grid.csv")
    print(f"{csv} ({sys.argv[2]} photos) and {grid} (a 10-degree evaluation gallery)")
