"""One shard of the feature cache: photos loaded, augmented and encoded by the frozen CLIP image
tower (:class:`ImageShardEncoder`), and the shard folder written whole (:func:`write_shard`).

Shared by the one-process cache (:mod:`geoindex.pipeline.image_features`) and its Ray actors
(:mod:`geoindex.pipeline.image_features_ray`), so both write the same shards.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from geoindex.atomic import atomic_path
from geoindex.encoders.images import crop_to_aspect, load_image
from geoindex.errors import ImageTooLargeError, InvalidImageError, TrainingDataError
from geoindex.pipeline.augment import augment, view_rng
from geoindex.pipeline.photo_csv import Photos


class ImageShardEncoder:
    """Loads, augments and preprocesses photos on a thread pool; encodes them in batches."""

    def __init__(self, clip, preprocess, device, batch_size, views, seed, max_pixels, strict, workers, dtype):
        self.clip, self.preprocess, self.device = clip, preprocess, device
        self.batch_size, self.views, self.seed = batch_size, views, seed
        self.max_pixels, self.strict, self.dtype = max_pixels, strict, np.dtype(dtype)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="decode")

    def __enter__(self) -> ImageShardEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(cancel_futures=True)

    def _load(self, photos: Photos, row: int):
        """(row, [view tensors]) or (row, reason)."""
        try:
            img = crop_to_aspect(load_image(photos.images[row], max_pixels=self.max_pixels))
        except (InvalidImageError, ImageTooLargeError, OSError) as e:  # OSError: unreadable (permissions, I/O)
            if self.strict:
                raise TrainingDataError(f"line {photos.lines[row]}: {e} (without --strict such photos are "
                                        "skipped and listed)") from e
            return row, str(e)
        views = [img] + [augment(img, view_rng(self.seed, row, v)) for v in range(1, self.views)]
        return row, [self.preprocess(v) for v in views]

    def shard(self, photos: Photos, rows: np.ndarray, bar) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        import torch

        from geoindex.encoders.clip import autocast

        feats, ok, skipped = [], [], []
        batch_photos = max(1, self.batch_size // self.views)
        for start in range(0, len(rows), batch_photos):
            part = rows[start : start + batch_photos]
            tensors, kept = [], []
            for row, got in self.pool.map(lambda r: self._load(photos, int(r)), part):
                if isinstance(got, str):
                    skipped.append({"line": int(photos.lines[row]), "image": str(photos.images[row]), "reason": got})
                else:
                    tensors.extend(got)
                    kept.append(row)
            if kept:
                batch = torch.stack(tensors).to(self.device)
                with autocast(self.device, torch.float16):
                    out = self.clip.encode_image(batch).float()
                feats.append(out.reshape(len(kept), self.views, -1).cpu().numpy().astype(self.dtype))
                ok.extend(kept)
            bar.update(len(part))
        width = feats[0].shape[-1] if feats else 0
        return (np.concatenate(feats) if feats else np.empty((0, self.views, width), self.dtype),
                np.asarray(ok, dtype=np.int64), skipped)


def shard_dir(out: Path, number: int) -> Path:
    """Where shard ``number`` of the cache ``out`` lives (whole, or not at all)."""
    return out / "shards" / f"{number:05d}"


def write_shard(folder: Path, feats: np.ndarray, latlng: np.ndarray, rows: np.ndarray, skipped: list[dict]) -> None:
    """Write one shard whole (a folder renamed into place): its features, lat, lng, CSV rows and skips."""
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        np.save(tmp / "feats.npy", feats)
        np.save(tmp / "latlng.npy", latlng)
        np.save(tmp / "rows.npy", rows)
        (tmp / "skipped.json").write_text(json.dumps(skipped))
