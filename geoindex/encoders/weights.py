"""Where pretrained weights come from: named sources, resolved in one place.

GeoCLIP's location encoder, image MLP head and logit scale ship as ``.pth`` files inside the
``geoclip`` package on PyPI (``geoclip/model/weights``). geoindex reads them as data: it never
imports the reference model classes. ``GEOINDEX_GEOCLIP_WEIGHTS`` points at another folder with
the same three files (for example a fine-tuned release).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from geoindex.errors import WeightsNotFoundError

WEIGHTS_ENV = "GEOINDEX_GEOCLIP_WEIGHTS"

LOCATION_ENCODER_FILE = "location_encoder_weights.pth"
IMAGE_HEAD_FILE = "image_encoder_mlp_weights.pth"
LOGIT_SCALE_FILE = "logit_scale_weights.pth"
GALLERY_100K_FILE = "coordinates_100K.csv"


@dataclass(frozen=True)
class GeoclipFiles:
    """Paths of the pretrained GeoCLIP files, and where they were found."""

    location_encoder: Path
    image_head: Path
    logit_scale: Path
    source: str  # "geoclip-pypi" or the env var's folder


def _geoclip_package_dir() -> Path | None:
    spec = importlib.util.find_spec("geoclip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def geoclip_files() -> GeoclipFiles:
    """Locate the pretrained GeoCLIP weight files, or raise a WeightsNotFoundError that says how."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        folder, source = Path(override), f"{WEIGHTS_ENV}={override}"
    else:
        pkg = _geoclip_package_dir()
        if pkg is None:
            raise WeightsNotFoundError(
                "GeoCLIP weights not found: the `geoclip` package is not installed. "
                "Run `pip install geoclip` (it ships the pretrained files), "
                f"or set {WEIGHTS_ENV}=DIR to a folder holding {LOCATION_ENCODER_FILE}."
            )
        folder, source = pkg / "model" / "weights", "geoclip-pypi"
    files = GeoclipFiles(
        location_encoder=folder / LOCATION_ENCODER_FILE,
        image_head=folder / IMAGE_HEAD_FILE,
        logit_scale=folder / LOGIT_SCALE_FILE,
        source=source,
    )
    for path in (files.location_encoder, files.image_head, files.logit_scale):
        if not path.is_file():
            raise WeightsNotFoundError(
                f"GeoCLIP weight file missing: {path}. Reinstall with "
                f"`pip install --force-reinstall geoclip`, or set {WEIGHTS_ENV} to a folder "
                "that holds all three GeoCLIP .pth files."
            )
    return files


def gallery_100k_path() -> Path:
    """GeoCLIP's own 100K gallery CSV (LAT,LON header), shipped in the geoclip package."""
    pkg = _geoclip_package_dir()
    path = pkg / "model" / "gps_gallery" / GALLERY_100K_FILE if pkg else None
    if path is None or not path.is_file():
        raise WeightsNotFoundError(
            "GeoCLIP's 100K gallery CSV not found: run `pip install geoclip`."
        )
    return path


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
