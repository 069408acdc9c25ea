"""Where pretrained weights come from: named sources, resolved in one place.

GeoCLIP's location encoder, image MLP head and logit scale ship as ``.pth`` files inside the
``geoclip`` package on PyPI (``geoclip/model/weights``). geoindex reads them as data: it never
imports the reference model classes. ``GEOINDEX_GEOCLIP_WEIGHTS`` points at another folder with
the same three files (for example a fine-tuned release), and every command's ``--weights DIR``
(a folder ``geoindex-train fit`` wrote) wins over both. Such a folder also holds ``weights.json``:
which CLIP backbone its head was trained on, and how.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from geoindex.errors import WeightsNotFoundError
from geoindex.hashing import sha256_file  # noqa: F401  (re-exported: it lived here)

WEIGHTS_ENV = "GEOINDEX_GEOCLIP_WEIGHTS"

LOCATION_ENCODER_FILE = "location_encoder_weights.pth"
IMAGE_HEAD_FILE = "image_encoder_mlp_weights.pth"
LOGIT_SCALE_FILE = "logit_scale_weights.pth"
GALLERY_100K_FILE = "coordinates_100K.csv"
WEIGHTS_INFO_FILE = "weights.json"  # written by geoindex-train fit beside the three .pth files


@dataclass(frozen=True)
class GeoclipFiles:
    """Paths of the pretrained GeoCLIP files, and where they were found."""

    location_encoder: Path
    image_head: Path
    logit_scale: Path
    source: str  # "geoclip-pypi", the env var's folder, or the --weights folder
    info: dict = field(default_factory=dict)  # the folder's weights.json ({} for the released weights)

    @property
    def clip_model(self) -> str | None:
        """The CLIP backbone these weights' image head was trained on (None: the released ViT-L-14)."""
        return self.info.get("clip_model")


def _geoclip_package_dir() -> Path | None:
    spec = importlib.util.find_spec("geoclip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


DEFAULT_CLIP_MODEL = "ViT-L-14"  # GeoCLIP's backbone


def clip_model_for(model: str | None, files: GeoclipFiles) -> str:
    """The CLIP backbone a run uses: ``model`` when given, else the one the head in ``files`` was
    trained on (a ``geoindex train`` weights folder records it), else GeoCLIP's ViT-L-14."""
    return model or files.clip_model or DEFAULT_CLIP_MODEL


def geoclip_files(weights: str | Path | None = None) -> GeoclipFiles:
    """Locate the GeoCLIP weight files, or raise a WeightsNotFoundError that says how.

    ``weights``: a folder (``--weights``); else ``$GEOINDEX_GEOCLIP_WEIGHTS``; else the geoclip package.
    """
    override = os.environ.get(WEIGHTS_ENV)
    if weights is not None:
        folder, source = Path(weights), str(Path(weights).resolve())
        if not folder.is_dir():
            raise WeightsNotFoundError(
                f"--weights {str(weights)!r} is not a folder: pass the folder `geoindex-train fit --out` "
                f"wrote (it holds {LOCATION_ENCODER_FILE}), or leave --weights out for the released weights"
            )
    elif override:
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
        info=_read_info(folder / WEIGHTS_INFO_FILE),
    )
    for path in (files.location_encoder, files.image_head, files.logit_scale):
        if not path.is_file():
            raise WeightsNotFoundError(
                f"GeoCLIP weight file missing: {path}. Reinstall with "
                f"`pip install --force-reinstall geoclip`, or set {WEIGHTS_ENV} to a folder "
                "that holds all three GeoCLIP .pth files."
            )
    return files


def _read_info(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsNotFoundError(f"{path} is not readable JSON ({e}): copy the weights folder again") from e
    if not isinstance(info, dict):
        raise WeightsNotFoundError(f"{path} does not hold a JSON object: copy the weights folder again")
    return info


def gallery_100k_path() -> Path:
    """GeoCLIP's own 100K gallery CSV (LAT,LON header), shipped in the geoclip package."""
    pkg = _geoclip_package_dir()
    path = pkg / "model" / "gps_gallery" / GALLERY_100K_FILE if pkg else None
    if path is None or not path.is_file():
        raise WeightsNotFoundError(
            "GeoCLIP's 100K gallery CSV not found: run `pip install geoclip`."
        )
    return path


# -- downloads that cannot happen ----------------------------------------------------------------
PROBE_TIMEOUT_S = 3.0
_TRUE = ("1", "true", "yes", "on")


def open_clip_cached(pretrained_cfg: dict) -> bool:
    """True when open_clip has ``pretrained_cfg``'s weights on disk (its hub files or its URL cache).
    A config with nothing to download counts as cached."""
    hub, url = pretrained_cfg.get("hf_hub", ""), pretrained_cfg.get("url", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        model_id, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        return any(isinstance(try_to_load_from_cache(model_id, n), str) for n in names)
    if url:
        return (Path.home() / ".cache" / "clip" / os.path.basename(url)).is_file()
    return True


def check_download_possible(pretrained_cfg: dict, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise at once when open_clip would have to download ``pretrained_cfg``'s weights and cannot.

    Weights already in the Hugging Face (or open_clip URL) cache pass. Otherwise the host the
    download would use (``$HF_ENDPOINT``, or the proxy in ``$HTTPS_PROXY``) must accept a TCP
    connection within ``timeout_s``; ``HF_HUB_OFFLINE=1`` means it cannot. Without this check an
    offline machine waits out the hub client's retries (> 60 s) before the same error.
    Raises ``OSError`` with the reason; the caller words the fix.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    hub, url = pretrained_cfg.get("hf_hub", ""), pretrained_cfg.get("url", "")
    if open_clip_cached(pretrained_cfg):
        return
    if hub:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
            raise OSError(f"HF_HUB_OFFLINE is set and {hub} is not in the Hugging Face cache")
        target = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    elif url:
        target = url
    else:
        return  # nothing to download: open_clip reports anything else itself
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    parts = urlparse(proxy or target)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()  # DNS too: that can hang
            outcome.append(None)
        except OSError as e:
            outcome.append(e)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        raise OSError(f"{host}:{port} did not answer in {timeout_s:g} s (no network?)")
    if outcome[0] is not None:
        raise OSError(f"{host}:{port} unreachable ({outcome[0]}): no network?")
