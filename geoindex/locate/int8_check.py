"""The guard in front of int8 (``--precision int8``): a self-check on the weights and the index in use.

int8 error depends on the weights (measured 0.974-0.9995 cosine on random ViT-L/14 weights; real
weights may differ either way), so int8 is never a default and never used unchecked. On the first
use with given weights and a given index, a probe set of photos (``--int8-probe DIR``, else the run's
own first :data:`PROBES` photos) is encoded by the fp32 and the int8 graph, and both are searched:

* ``cosine_min`` / ``cosine_median``: int8 against fp32 embeddings;
* ``top1_agreement``: the share of probes whose top-1 cell is the same;
* ``median_km_moved``: the median distance between the two top-1 answers.

Below ``min_agreement`` (default :data:`MIN_AGREEMENT`) int8 is refused with these numbers. The
result is cached beside the int8 graph, keyed by its SHA-256 and the index's manifest, and returned
for provenance (logs, the archive's settings).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from geoindex.encoders.onnx_tower import write_record
from geoindex.errors import BackendError, GeoindexError, InvalidArgumentError

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.98
PROBES = 64
MIN_PROBES = 8


def read_probes(paths, max_pixels: int) -> list:
    """The first :data:`PROBES` readable photos of ``paths`` (unreadable ones skipped): the probe set."""
    from geoindex.encoders.images import load_image

    images = []
    for path in paths:
        try:
            images.append(load_image(path, max_pixels=max_pixels))
        except GeoindexError:
            continue
        if len(images) == PROBES:
            break
    return images


def check_path(int8_graph: Path, index_dir: Path) -> Path:
    manifest = hashlib.sha256((Path(index_dir) / "manifest.json").read_bytes()).hexdigest()[:16]
    return int8_graph.with_name(f"{int8_graph.stem}-check-{manifest}.json")


def measure(encoder, int8_tower, geolocator, images: list) -> dict:
    """fp32 (``encoder.tower``) against ``int8_tower`` on ``images``: cosine, top-1 cell agreement and
    median km moved on ``geolocator``'s index."""
    from geoindex.cells.geocode import haversine_km
    from geoindex.encoders.images import crop_to_aspect
    from geoindex.locate.options import QueryOptions

    pixels = np.stack([encoder.preprocess(crop_to_aspect(im)).numpy() for im in images])
    x32 = np.concatenate([encoder.tower(pixels[s:s + 8]) for s in range(0, len(pixels), 8)])
    x8 = np.concatenate([int8_tower(pixels[s:s + 8]) for s in range(0, len(pixels), 8)])
    cos = (x32 * x8).sum(1) / (np.linalg.norm(x32, axis=1) * np.linalg.norm(x8, axis=1))
    options = QueryOptions(k=1)
    top = [[r.predictions[0] for r in geolocator.locate(x, options)] for x in (x32, x8)]
    same = np.array([a.cell == b.cell for a, b in zip(*top)])
    km = haversine_km(np.array([a.lat for a in top[0]]), np.array([a.lng for a in top[0]]),
                      np.array([b.lat for b in top[1]]), np.array([b.lng for b in top[1]]))
    return {"probes": len(images), "cosine_min": float(cos.min()), "cosine_median": float(np.median(cos)),
            "top1_agreement": float(same.mean()), "median_km_moved": float(np.median(km)),
            "max_km_moved": float(np.max(km))}


def guard(encoder, geolocator, probe_images, min_agreement: float = MIN_AGREEMENT) -> dict:
    """Switch ``encoder`` (loaded with precision int8: fp32 ``tower``, ``int8_tower`` beside it) to
    int8 if the self-check passes; return the check (from the cache when done before).
    ``probe_images``: a callable giving the probe photos (only called when the check must run).

    Raises:
        BackendError: the agreement is below ``min_agreement`` (every number in the message).
        InvalidArgumentError: ``min_agreement`` outside 0..1, or fewer than MIN_PROBES probes.
    """
    if not 0 <= min_agreement <= 1:
        raise InvalidArgumentError(f"--int8-min-agreement {min_agreement} is not in 0..1 (default {MIN_AGREEMENT})")
    int8 = encoder.int8_tower
    path = check_path(int8.path, geolocator.dir.path)
    if path.is_file():
        check = json.loads(path.read_text())
        if check.get("int8_sha256") != int8.record.get("sha256"):
            check = None
    else:
        check = None
    if check is None:
        images = list(probe_images())
        if len(images) < MIN_PROBES:
            raise InvalidArgumentError(
                f"--precision int8 checks itself on at least {MIN_PROBES} photos, and {len(images)} were given: "
                f"pass --int8-probe DIR with {MIN_PROBES}-{PROBES} photos like yours")
        check = {**measure(encoder, int8, geolocator, images), "int8_sha256": int8.record.get("sha256")}
        write_record(path, check)
    numbers = (f"top-1 cell agreement {check['top1_agreement']:.3f} on {check['probes']} probe photos, "
               f"median {check['median_km_moved']:.1f} km moved (max {check['max_km_moved']:.0f}), "
               f"cosine to fp32 min {check['cosine_min']:.4f} / median {check['cosine_median']:.4f}")
    if check["top1_agreement"] < min_agreement:
        raise BackendError(f"int8 refused for these weights on this index: {numbers}; below --int8-min-agreement "
                           f"{min_agreement}: use --precision fp32 (the default)")
    log.warning("int8 self-check passed: %s (at least %s needed)", numbers, min_agreement)
    encoder.tower, encoder.backend = int8, "onnx-int8"
    return {**check, "min_agreement": min_agreement}
