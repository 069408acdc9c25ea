"""The feature cache: the frozen CLIP image tower run once over a photos CSV.

``cache_features(CSV, OUT)`` reads and checks every row (:mod:`geoindex.pipeline.photo_csv`), then
encodes the photos in shards of ``shard_rows`` rows; each shard is written whole (a folder renamed
into place, :mod:`geoindex.atomic`), so a killed run resumes at the first missing shard. Images that cannot be read are
skipped and listed (``skipped.csv``: line, image, reason); ``strict`` makes the first one an error.
``views`` > 1 caches augmented views (:mod:`geoindex.pipeline.augment`) beside the plain one.

Layout of OUT::

    work.json            what the shards depend on (CSV checksum, backbone, views, seed, ...)
    shards/00000/        feats.npy (m, views, width) float16/32 raw CLIP image features
                         latlng.npy (m, 2) float64, rows.npy (m,) int64 CSV row numbers (0-based)
                         skipped.json
    skipped.csv          every photo left out, and why
    features.json        written last: the cache is complete (counts, width, backbone, timings)

Training then never touches pixels: :class:`FeatureCache` memory-maps the shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from geoindex.atomic import atomic_path, write_json
from geoindex.encoders.images import DEFAULT_MAX_PIXELS
from geoindex.errors import InvalidArgumentError, TrainingDataError
from geoindex.pipeline.image_shards import ImageShardEncoder, shard_dir, write_shard
from geoindex.pipeline.photo_csv import Photos, read_photos
from geoindex.workstate import WorkState

log = logging.getLogger(__name__)

FORMAT = 1
FEATURES_FILE = "features.json"
WORK_FILE = "work.json"
SKIPPED_FILE = "skipped.csv"
SHARD_ROWS = 4096
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class FeaturesReport:
    images: int  # photos encoded (all shards, resumed ones included)
    skipped: int
    views: int
    encoded_now: int  # photos encoded by this call (0 when everything was cached)
    seconds: float
    device: str
    out: Path

    @property
    def images_per_s(self) -> float:
        return self.encoded_now / self.seconds if self.seconds > 0 else float("nan")


def _checkpoint_id(checkpoint: str | None) -> dict | None:
    """Name and size of the weights that load: a checkpoint file, or a transformers folder's weight
    file (a hub snapshot folder's name is its revision)."""
    if not checkpoint:
        return None
    from geoindex.encoders.hf_clip import WEIGHT_FILES

    p = Path(checkpoint)
    if p.is_dir():
        weights = next((p / n for n in WEIGHT_FILES if (p / n).is_file()), None)
        if weights is not None:
            return {"name": p.name, "weights": weights.name, "bytes": weights.stat().st_size}
    return {"name": p.name, "bytes": p.stat().st_size} if p.is_file() else {"name": str(checkpoint)}


def _prepare_out(out: Path, fingerprint: dict, overwrite: bool) -> None:
    """Create OUT, or check that its shards were made the same way (resume), or clear it (overwrite)."""
    work = WorkState(out, WORK_FILE)
    if out.exists() and any(out.iterdir()):
        if not work.stamp_path.is_file() and not (out / FEATURES_FILE).is_file():
            raise TrainingDataError(f"--out {str(out)!r} exists and is not a feature cache: give an empty or new folder")
        if overwrite:
            shutil.rmtree(out)
        elif (out / FEATURES_FILE).is_file():
            raise TrainingDataError(f"feature cache {str(out)!r} is complete: pass --overwrite to encode again, "
                                    "or give `geoindex-train fit --features` this folder")
    work.resume_or_refuse(fingerprint, lambda changed: TrainingDataError(
        f"feature cache {str(out)!r} was started with other settings ({', '.join(changed)} differ): "
        "run the same command as before to resume, or pass --overwrite to start again"), subdirs=("shards",))


def cache_features(csv: str | Path, out: str | Path, *, clip_model: str = "ViT-L-14",
                   clip_checkpoint: str | None = None, image_root: str | Path | None = None,
                   device: str = "auto", batch_size: int = 64, views: int = 1, seed: int = 0,
                   shard_rows: int = SHARD_ROWS, dtype: str = "float16", overwrite: bool = False,
                   strict: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 4,
                   progress: bool = True, ray: str | None = None, backend: str = "torch") -> FeaturesReport:
    """Encode every photo of ``csv`` into the cache ``out`` (see the module docstring). ``ray``: a
    Ray cluster address (or ``"auto"``) whose actors encode the shards (:mod:`.ray_features`); this
    process still writes them, so the cache is the same and resumes the same way. ``backend``: the
    image tower's runtime, ``torch``, ``onnx`` or ``auto`` (:mod:`geoindex.encoders.onnx_features`;
    Ray's actors run torch)."""
    import torch
    from tqdm import tqdm

    from geoindex.encoders.clip import clip_width, load_clip, resolve_checkpoint
    from geoindex.encoders.location import pick_device
    from geoindex.encoders.onnx_features import feature_encoder

    for name, value in (("--batch-size", batch_size), ("--views", views), ("--shard-rows", shard_rows),
                        ("--workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidArgumentError(f"{name} {value!r} must be a positive integer")
    if dtype not in DTYPES:
        raise InvalidArgumentError(f"--dtype {dtype!r} is not one of {DTYPES}: float16 halves the cache")
    # the checkpoint that will load, named in the fingerprint whichever way it came (argument, env, hub cache)
    clip_checkpoint = resolve_checkpoint(clip_model, clip_checkpoint)
    photos = read_photos(csv, image_root)
    out = Path(out)
    fingerprint = {
        "format": FORMAT, "csv_sha256": photos.csv_sha256,
        "image_root": str(Path(image_root).resolve()) if image_root else str(Path(csv).resolve().parent),
        "clip_model": clip_model, "clip_checkpoint": _checkpoint_id(clip_checkpoint),
        "views": views, "seed": seed, "shard_rows": shard_rows, "dtype": dtype, "max_pixels": max_pixels,
    }
    _prepare_out(out, fingerprint, overwrite)
    width = clip_width(clip_model)
    n_shards = -(-len(photos) // shard_rows)
    todo = [s for s in range(n_shards) if not shard_dir(out, s).is_dir()]
    if len(todo) < n_shards:
        log.info("resuming: %d of %d shards already in %s", n_shards - len(todo), n_shards, out)
    if ray is not None:
        if backend == "onnx":
            raise InvalidArgumentError("--backend onnx runs in this process, not on Ray's actors: leave --ray out, "
                                       "or use --backend torch (or auto)")
        from geoindex.pipeline.image_features_ray import encode_features_on_ray

        encoded, seconds, label = encode_features_on_ray(
            ray, photos, out, todo, shard_rows, progress, clip_model=clip_model, clip_checkpoint=clip_checkpoint,
            device=device, batch_size=batch_size, views=views, seed=seed, max_pixels=max_pixels, strict=strict,
            dtype=dtype)
        return _finish(out, photos, n_shards, views, width, fingerprint, encoded, seconds, label)
    dev = pick_device(device)
    clip, preprocess, _ = load_clip(clip_model, clip_checkpoint, dev)
    clip = feature_encoder(clip, clip_model, preprocess.size, dev, backend)
    start, encoded = time.perf_counter(), 0
    encoder = ImageShardEncoder(clip, preprocess, dev, batch_size, views, seed, max_pixels, strict, workers, dtype)
    with encoder, tqdm(total=len(photos), unit="img", disable=not progress, desc="features",
                       initial=len(photos) - sum(min(shard_rows, len(photos) - s * shard_rows) for s in todo)) as bar:
        for s in todo:
            rows = np.arange(s * shard_rows, min(len(photos), (s + 1) * shard_rows))
            with torch.inference_mode():
                feats, ok, skipped = encoder.shard(photos, rows, bar)
            write_shard(shard_dir(out, s), feats, photos.latlng[ok], ok, skipped)
            encoded += len(ok)
    seconds = time.perf_counter() - start
    return _finish(out, photos, n_shards, views, width, fingerprint, encoded, seconds, str(dev))


def _finish(out: Path, photos: Photos, n_shards: int, views: int, width: int, fingerprint: dict,
            encoded: int, seconds: float, device: str) -> FeaturesReport:
    counts, skipped = [], []
    for s in range(n_shards):
        folder = shard_dir(out, s)
        counts.append(int(np.load(folder / "rows.npy", mmap_mode="r").shape[0]))
        skipped += json.loads((folder / "skipped.json").read_text())
    total = sum(counts)
    if total == 0:
        first = skipped[0]
        raise TrainingDataError(
            f"none of the {len(photos)} photos could be read (line {first['line']}: {first['reason']}): check the "
            "image paths, or --image-root when they are relative to another folder than the CSV's"
        )
    if skipped:
        first = skipped[0]
        log.warning("%d of %d photos could not be read and are left out (listed in %s; first: line %d, %s)",
                    len(skipped), len(photos), out / SKIPPED_FILE, first["line"], first["reason"])
    import csv as csv_module

    with atomic_path(out / SKIPPED_FILE) as tmp, open(tmp, "w", newline="") as f:
        writer = csv_module.writer(f)
        writer.writerow(["line", "image", "reason"])
        writer.writerows([s["line"], s["image"], s["reason"]] for s in skipped)
    info = {
        **fingerprint, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "width": width, "images": total, "skipped": len(skipped), "rows": len(photos),
        "shards": counts, "device": device, "seconds": round(seconds, 3),
        "images_per_s": round(encoded / seconds, 2) if encoded and seconds > 0 else None,
    }
    write_json(out / FEATURES_FILE, info, indent=1)
    return FeaturesReport(total, len(skipped), views, encoded, seconds, device, out)


class FeatureCache:
    """A complete feature cache, memory-mapped: ``latlng`` (n, 2) and :meth:`take` of features."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / FEATURES_FILE
        if not path.is_file():
            hint = ("it is not finished: run the same `geoindex-train features` command again to resume"
                    if (self.folder / WORK_FILE).is_file() else
                    "make one with `geoindex-train features --csv photos.csv --out FOLDER`")
            raise TrainingDataError(f"--features {str(self.folder)!r} holds no complete feature cache: {hint}")
        self.info = json.loads(path.read_text())
        self.shards = [np.load(shard_dir(self.folder, s) / "feats.npy", mmap_mode="r")
                       for s in range(len(self.info["shards"]))]
        self.latlng = np.concatenate([np.load(shard_dir(self.folder, s) / "latlng.npy")
                                      for s in range(len(self.shards))])
        self.offsets = np.cumsum([0] + [len(a) for a in self.shards])
        self.width = int(self.info["width"])
        self.views = int(self.info["views"])
        self.clip_model = self.info["clip_model"]
        if self.offsets[-1] != len(self.latlng) or len(self.latlng) != self.info["images"]:
            raise TrainingDataError(f"feature cache {str(self.folder)!r} is inconsistent (shard sizes differ from "
                                    f"{FEATURES_FILE}): make it again with --overwrite")

    def __len__(self) -> int:
        return len(self.latlng)

    def take(self, idx: np.ndarray, views: np.ndarray | None = None) -> np.ndarray:
        """(b,) photo numbers (and (b,) view numbers; default the plain view 0) -> (b, width) float32."""
        idx = np.asarray(idx, dtype=np.int64)
        views = np.zeros(len(idx), dtype=np.int64) if views is None else np.asarray(views, dtype=np.int64)
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        out = np.empty((len(idx), self.width), dtype=np.float32)
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            local = idx[sel] - self.offsets[s]
            order = np.argsort(local, kind="stable")  # memory-mapped reads in file order
            out[sel[order]] = self.shards[s][local[order], views[sel[order]]]
        return out

    def fingerprint(self) -> str:
        """A short id of this cache's contents (what a training run's resume checks)."""
        keys = ("csv_sha256", "image_root", "clip_model", "clip_checkpoint", "views", "seed", "max_pixels", "images",
                "shards", "dtype")
        return hashlib.sha256(json.dumps({k: self.info.get(k) for k in keys}, sort_keys=True).encode()).hexdigest()[:16]
