"""``geoindex build --photos photos.csv --out REF``: reference photos -> GeoCLIP image embeddings in FAISS,
their places and metadata in DuckDB.

Steps, each reusing the training pipeline's guarantees:

1. every CSV row is checked first (:func:`geoindex.photos.rows.read_reference_rows`);
2. CLIP image features: a ``geoindex train features`` cache given with ``--photos-features`` (its CSV
   checksum and backbone must match; nothing is re-encoded), or one made now in ``REF.partial/``
   (:func:`geoindex.train.features.cache_features`: shards written whole, so a killed build resumes
   where it stopped; unreadable photos are skipped and listed in ``REF/skipped.csv``);
3. GeoCLIP's image head -> (n, 512) float32 L2-normalised embeddings, the query space;
4. the index: ``Flat`` up to :data:`FLAT_MAX` photos, else IVF + PQ32 codes with re-ranking from an
   fp16 exact store on disk (``benchmarks/bench_photos.py`` measured the choice);
5. everything is written into a temporary sibling folder and renamed to REF at the end, so REF is
   either the old gallery or the complete new one; the manifest lists every file's SHA-256.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from geoindex.errors import InvalidArgumentError, TrainingDataError
from geoindex.index.search import SearchSettings
from geoindex.photos.layout import FORMAT, PHOTOS_DB, SKIPPED, VECTORS
from geoindex.store.exact_store import STORE, write_store
from geoindex.store.manifest import file_entries, versions, write_manifest

log = logging.getLogger(__name__)

FLAT_MAX = 200_000  # Flat: 2 KB a photo resident, exact; above, IVF + PQ32 + exact store (bench_photos)
COMPRESSED_SEARCH = "nprobe=32,rerank=400"  # bench_photos, 1M: the best recall within 5 ms (0.73)


@dataclass(frozen=True)
class PhotoBuildConfig:
    csv: Path
    out: Path
    features: Path | None = None  # a `geoindex train features` cache of this CSV
    image_root: Path | None = None
    clip_model: str | None = None
    clip_checkpoint: str | None = None
    weights: Path | None = None
    device: str = "auto"
    factory: str = "auto"
    search: SearchSettings | None = None
    overwrite: bool = False
    seed: int = 1234
    progress: bool = True


def nlist_for(n: int) -> int:
    """IVF lists for ``n`` photos: the power of two nearest sqrt(n)."""
    return int(2 ** round(np.log2(max(np.sqrt(n), 1))))


def choose_factory(n: int) -> tuple[str, str]:
    """(factory, search) the measured rule picks for ``n`` photos."""
    if n <= FLAT_MAX:
        return "Flat", ""
    return f"IVF{nlist_for(n)}_HNSW32,PQ32", COMPRESSED_SEARCH


def build_photos(config: PhotoBuildConfig) -> dict:
    """Build the reference directory ``config.out``; returns its manifest."""
    from geoindex.encoders.weights import clip_model_for, geoclip_files
    from geoindex.photos.rows import read_reference_rows

    out = Path(config.out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not config.overwrite:
        raise InvalidArgumentError(f"--out {str(out)!r} exists and is not empty: pass --overwrite to replace it, "
                                   "or give a new folder")
    started = time.perf_counter()
    rows = read_reference_rows(config.csv, config.image_root)
    files = geoclip_files(config.weights)
    clip_model = clip_model_for(config.clip_model, files)
    work = out.with_name(out.name + ".partial")
    cache, cache_dir = _features(config, rows, clip_model, work)
    timings = {"features": time.perf_counter() - started}
    kept = np.concatenate([np.load(Path(cache_dir) / "shards" / f"{s:05d}" / "rows.npy")
                           for s in range(len(cache.info["shards"]))])
    xb = _embed(cache, config.weights)
    timings["embed"] = time.perf_counter() - started - timings["features"]
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        t = time.perf_counter()
        factory, search = _index(xb, config, tmp)
        timings["index"] = time.perf_counter() - t
        t = time.perf_counter()
        _metadata(tmp / PHOTOS_DB, rows, kept)
        timings["metadata_db"] = time.perf_counter() - t
        shutil.copyfile(Path(cache_dir) / "skipped.csv", tmp / SKIPPED)
        names = [VECTORS, PHOTOS_DB, SKIPPED] + ([STORE] if (tmp / STORE).exists() else [])
        manifest = {
            "format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "photos": int(len(xb)), "rows": len(rows.photos), "skipped": len(rows.photos) - int(len(xb)),
            "csv": {"path": str(Path(config.csv).resolve()), "sha256": rows.photos.csv_sha256,
                    "metadata_columns": rows.columns},
            "encoder": _encoder_entry(clip_model, cache, files, config),
            "index": {"factory": factory, "search": search, "ntotal": int(len(xb))},
            "store": {"kind": "fp16", "file": STORE} if (tmp / STORE).exists() else None,
            "timings_s": {k: round(v, 3) for k, v in timings.items()}, "versions": versions(),
            "files": file_entries(tmp, tuple(names)),
        }
        write_manifest(tmp, manifest)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)  # the features were only a means: REF is complete
    return manifest


def _features(config: PhotoBuildConfig, rows, clip_model: str, work: Path):
    """(FeatureCache, its folder): the given cache, checked, or one made (or resumed) in ``work``."""
    from geoindex.train.features import FEATURES_FILE, FeatureCache, cache_features

    if config.features is not None:
        cache = FeatureCache(config.features)
        if cache.info.get("csv_sha256") != rows.photos.csv_sha256:
            raise TrainingDataError(
                f"--photos-features {str(config.features)!r} was made from another CSV than {str(config.csv)!r} "
                "(checksums differ): give the CSV it was made from, or leave --photos-features out to encode this one")
        if cache.clip_model != clip_model:
            raise TrainingDataError(
                f"--photos-features {str(config.features)!r} holds {cache.clip_model} features, not {clip_model}: "
                f"pass --clip-model {cache.clip_model}, or leave --photos-features out to encode with {clip_model}")
        return cache, Path(config.features)
    folder = work / "features"
    if not (folder / FEATURES_FILE).is_file():
        cache_features(config.csv, folder, clip_model=clip_model, clip_checkpoint=config.clip_checkpoint,
                       image_root=config.image_root, device=config.device, dtype="float32",
                       progress=config.progress)
    return FeatureCache(folder), folder


def _embed(cache, weights, batch: int = 8192) -> np.ndarray:
    """CLIP features -> (n, 512) float32 L2-normalised GeoCLIP image embeddings (the plain view)."""
    import torch

    from geoindex.encoders.clip import head_width, load_geoclip_head

    head = load_geoclip_head(weights)
    if head_width(head) != cache.width:
        raise InvalidArgumentError(f"the GeoCLIP head takes {head_width(head)}-d features, the cache holds "
                                   f"{cache.width}-d ({cache.clip_model}): give --weights trained on that backbone")
    out = np.empty((len(cache), 512), np.float32)
    with torch.inference_mode():
        for s in range(0, len(cache), batch):
            feats = torch.from_numpy(cache.take(np.arange(s, min(s + batch, len(cache)))))
            out[s : s + len(feats)] = torch.nn.functional.normalize(head(feats), dim=1).numpy()
    return out


def _index(xb: np.ndarray, config: PhotoBuildConfig, folder: Path) -> tuple[str, str]:
    factory, search = choose_factory(len(xb)) if config.factory == "auto" else (config.factory, "")
    if config.search is not None:
        search = str(config.search)
    try:
        index = faiss.index_factory(xb.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise InvalidArgumentError(f"--factory {factory!r} is not a FAISS factory string ({e}): use auto, Flat or "
                                   "e.g. IVF1024,PQ32") from e
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf = faiss.downcast_index(ivf)  # the IndexIVFPQ, not its IndexIVF base
            ivf.cp.niter = 10
            if hasattr(ivf, "do_polysemous_training"):  # the factory's default for PQ: minutes of
                ivf.do_polysemous_training = False     # annealing for Hamming filtering, never used here
        sample = np.random.default_rng(config.seed).choice(len(xb), min(len(xb), 256 * nlist_for(len(xb))), replace=False)
        try:
            index.train(xb[np.sort(sample)])
        except RuntimeError as e:
            raise InvalidArgumentError(f"--factory {factory!r} cannot be trained on {len(xb)} photos ({e}): "
                                       "use --factory auto (Flat for small galleries) or fewer lists/codes") from e
    for s in range(0, len(xb), 65536):
        index.add(xb[s : s + 65536])
    faiss.write_index(index, str(folder / VECTORS))
    if SearchSettings.parse(search).rerank_depth:
        ids = np.arange(len(xb), dtype=np.int64)
        write_store(folder, "fp16", ids, lambda: iter([(ids, xb)]))
    return factory, search


def _metadata(path: Path, rows, kept: np.ndarray) -> None:
    """``photos`` table: id (the FAISS id), image (as written), path (resolved), lat, lng, line,
    place, admin1, country (the nearest GeoNames place's, as cells get theirs, without the open-ocean rule),
    cell (H3 res 15, for cell filters), metadata (JSON)."""
    import duckdb
    import h3
    import pandas as pd

    from geoindex.cells.geocode import reverse_geocode

    lat, lng = rows.photos.latlng[kept, 0], rows.photos.latlng[kept, 1]
    geo = reverse_geocode(lat, lng)
    frame = pd.DataFrame({
        "id": np.arange(len(kept), dtype=np.int64),
        "image": [rows.written[i] for i in kept],
        "path": [str(rows.photos.images[i]) for i in kept],
        "lat": lat, "lng": lng, "line": rows.photos.lines[kept],
        "place": geo.place, "admin1": geo.admin1, "country": geo.country,
        "cell": np.array([h3.str_to_int(h3.latlng_to_cell(a, b, 15)) for a, b in zip(lat, lng)], dtype=np.int64),
        "metadata": [json.dumps(rows.metadata[i]) for i in kept],
    })
    con = duckdb.connect(str(path))
    try:
        con.register("frame", frame)
        con.execute("CREATE TABLE photos AS SELECT * FROM frame ORDER BY id")
    finally:
        con.close()


def _encoder_entry(clip_model: str, cache, files, config: PhotoBuildConfig) -> dict:
    from geoindex.encoders.weights import sha256_file

    return {"clip_model": clip_model, "clip_checkpoint": cache.info.get("clip_checkpoint"),
            "weights_source": files.source, "image_head_sha256": sha256_file(files.image_head),
            "location_weights_sha256": sha256_file(files.location_encoder),
            "features": str(Path(config.features).resolve()) if config.features else None}


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``; an old ``out`` is moved aside first, deleted last."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
