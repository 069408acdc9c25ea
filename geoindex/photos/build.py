"""``geoindex build --photos photos.csv --out REF``: reference photos -> GeoCLIP image embeddings in FAISS,
their places and metadata in DuckDB.

Steps, each reusing the training pipeline's guarantees:

0. every refusal that needs only the arguments (``--out``, ``--factory``, ``--search``,
   ``--lists-on-disk``, ``--max-memory``), then every CSV row checked
   (:func:`geoindex.photos.rows.read_reference_rows`) and the refusals that need the row count
   (:mod:`geoindex.photos.photo_index`): all before any photo is opened;
1. CLIP image features: a ``geoindex train features`` cache given with ``--photos-features`` (its CSV
   checksum and backbone must match; nothing is re-encoded), or one made now in ``REF.partial/``
   (:func:`geoindex.pipeline.image_features.cache_features`: shards written whole, so a killed build resumes
   where it stopped; unreadable photos are skipped and listed in ``REF/skipped.csv``);
2. the index, streamed (:mod:`geoindex.photos.stream`): GeoCLIP's image head turns the cached
   features into (n, 512) float32 L2-normalised embeddings a batch at a time; the index is trained on
   a seeded sample and filled chunk by chunk while the fp16 exact store is written (no step holds all
   n embeddings). The factory: :func:`~geoindex.photos.photo_index.choose_factory` (Flat for small
   galleries, else IVF + PQ32 codes re-ranked from the store, as ``benchmarks/bench_photos.py``
   measured), or what ``--max-memory`` fits; the lists in ``REF/lists.ivfdata`` with ``--lists-on-disk``;
3. everything is written into ``REF.partial/staging/`` and published as REF by the cell build's step
   (:func:`geoindex.pipeline.workdir.publish`, under its lock: one builder per REF), so REF is
   either the old gallery or the complete new one; the manifest lists every file's SHA-256.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from geoindex.errors import InvalidArgumentError, TrainingDataError
from geoindex.index.search import SearchSettings
from geoindex.photos import photo_index
from geoindex.cells.countries import labels_entry
from geoindex.photos.layout import FORMAT, PHOTOS_DB, SKIPPED, VECTORS
from geoindex.photos.photo_index import choose_factory
from geoindex.pipeline.workdir import WorkLock, fresh_staging, publish
from geoindex.store.exact_store import STORE
from geoindex.store.manifest import LISTS, file_entries, versions, write_manifest

log = logging.getLogger(__name__)

FEATURE_SHARD_ROWS = 4096  # photos a feature shard holds: the grain of resuming and of Ray's encoder actors


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
    backend: str = "auto"  # the image tower's runtime: auto, torch or onnx (geoindex.encoders.onnx_features)
    factory: str = "auto"
    search: SearchSettings | None = None
    max_memory: int | str | None = None  # resident budget in bytes, or a size ("30MB", "4GiB")
    lists_on_disk: bool | None = None  # None: on disk when the lists would take over half the memory
    ray: str | None = None  # encode the features on this Ray cluster ("auto": $RAY_ADDRESS or a local one)
    overwrite: bool = False
    seed: int = 1234
    progress: bool = True


def build_photos(config: PhotoBuildConfig) -> dict:
    """Build the reference directory ``config.out``; returns its manifest. Every refusal that
    needs only the arguments and the CSV's rows comes before any photo is read or encoded."""
    from geoindex.encoders.weights import clip_model_for, geoclip_files
    from geoindex.photos.rows import read_reference_rows

    out, max_memory = _check_args(config)
    if config.ray is not None:  # join the cluster (and size its pool) before any photo is read
        from geoindex.pipeline.distributed import actor_plan, connect

        actor_plan(connect(config.ray), config.device)
    files = geoclip_files(config.weights)
    clip_model = clip_model_for(config.clip_model, files)
    started = time.perf_counter()
    rows = read_reference_rows(config.csv, config.image_root)
    budget = _check_rows(config, max_memory, len(rows.photos))
    work = out.with_name(out.name + ".partial")
    lock = WorkLock(work, out)  # one builder per REF, as for a cell index
    try:
        return _build_locked(config, out, work, lock, rows, budget, files, clip_model, started)
    finally:
        lock.release()


def _build_locked(config, out, work, lock, rows, budget, files, clip_model, started) -> dict:
    """The build once the work dir ``REF.partial`` is locked: features (made or resumed there), the
    index written into its ``staging/``, published as REF by the cell build's publish step."""
    from geoindex.photos.stream import Embeddings

    cache, cache_dir = _features(config, rows, clip_model, work)
    timings = {"features": time.perf_counter() - started}
    kept = np.concatenate([np.load(Path(cache_dir) / "shards" / f"{s:05d}" / "rows.npy")
                           for s in range(len(cache.info["shards"]))])
    emb = Embeddings(cache, config.weights)
    work.mkdir(exist_ok=True)
    tmp = fresh_staging(work)
    try:
        t = time.perf_counter()
        entry = _index(emb, config, budget, tmp)
        timings["index"] = time.perf_counter() - t
        t = time.perf_counter()
        _metadata(tmp / PHOTOS_DB, rows, kept)
        timings["metadata_db"] = time.perf_counter() - t
        shutil.copyfile(Path(cache_dir) / "skipped.csv", tmp / SKIPPED)
        names = [VECTORS, PHOTOS_DB, SKIPPED] + [f for f in (STORE, LISTS) if (tmp / f).exists()]
        manifest = {
            "format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "photos": len(emb), "rows": len(rows.photos), "skipped": len(rows.photos) - len(emb),
            "csv": {"path": str(Path(config.csv).resolve()), "sha256": rows.photos.csv_sha256,
                    "metadata_columns": rows.columns},
            "encoder": _encoder_entry(clip_model, cache, files, config),
            "index": entry["index"], "memory": entry["memory"],
            "store": {"kind": "fp16", "file": STORE} if (tmp / STORE).exists() else None, "labels": labels_entry(),
            "timings_s": {k: round(v, 3) for k, v in timings.items()}, "versions": versions(),
            "files": file_entries(tmp, tuple(names)),
        }
        write_manifest(tmp, manifest)
        publish(work, tmp, out, lock)  # the features were only a means: the rest of the work dir goes
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _check_args(config: PhotoBuildConfig) -> tuple[Path, int | None]:
    """(REF resolved, the budget in bytes): the refusals that need only the arguments."""
    from geoindex.index.budget import parse_size

    out = Path(config.out).resolve()
    above = next((p for p in out.parents if p.exists()), None)
    if (out.exists() and not out.is_dir()) or (above is not None and not above.is_dir()):
        raise InvalidArgumentError(f"--out {str(config.out)!r} is or lies under a file, not a folder: give a new "
                                   "folder's path")
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        raise InvalidArgumentError(f"--out {str(out)!r} exists and is not empty: pass --overwrite to replace it, "
                                   "or give a new folder")
    if config.ray is not None and config.features is not None:
        raise InvalidArgumentError("--ray encodes the photos on a cluster, and with --photos-features nothing is "
                                   "encoded: drop --ray (or --photos-features to encode again)")
    max_memory = None if config.max_memory is None else parse_size(config.max_memory)
    photo_index.check_index_args(config.factory, config.search, config.lists_on_disk, max_memory)
    return out, max_memory


def _check_rows(config: PhotoBuildConfig, max_memory: int | None, n_rows: int) -> photo_index.BudgetChoice | None:
    """The refusals that need the CSV's row count (an upper bound of the photos kept); the budget's choice."""
    photo_index.check_for_rows(config.factory, config.search, config.lists_on_disk, n_rows)
    if max_memory is None:
        return None
    budget = photo_index.choose_for_budget(max_memory, n_rows, config.lists_on_disk)
    if config.lists_on_disk and budget.cost == "Flat":
        raise photo_index.unmappable_error(f"Flat (what --max-memory {max_memory:,} picks for {n_rows:,} photos)")
    return budget


def _features(config: PhotoBuildConfig, rows, clip_model: str, work: Path):
    """(FeatureCache, its folder): the given cache, checked, or one made (or resumed) in ``work``."""
    from geoindex.pipeline.image_features import FEATURES_FILE, FeatureCache, cache_features

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
                       shard_rows=FEATURE_SHARD_ROWS, progress=config.progress, ray=config.ray,
                       backend=config.backend)
    return FeatureCache(folder), folder


def _index(emb, config: PhotoBuildConfig, budget: photo_index.BudgetChoice | None, folder: Path) -> dict:
    """Train, fill and write the index (and the exact store when it re-ranks) into ``folder``;
    returns the manifest's ``index`` and ``memory`` entries."""
    from geoindex.index.io import stdout_to_stderr
    from geoindex.photos import stream

    n = len(emb)
    asked = config.lists_on_disk
    if budget is not None:
        factory, search = budget.factory(n), budget.search(n)
    elif config.factory == "auto":
        if asked is None and n > photo_index.FLAT_MAX:
            asked = photo_index.lists_too_big(n)  # decided once: too big takes the mappable factory, on disk
        factory, search = choose_factory(n, asked)
    else:
        factory, search = config.factory, ""
    if config.search is not None:
        search = str(config.search)
    index = stream.new_index(factory)
    on_disk = photo_index.lists_on_disk(asked, index, n)
    train_size = stream.train(index, emb, factory, config.seed)
    index = stream.fill(index, emb, folder, bool(SearchSettings.parse(search).rerank_depth),
                        folder / LISTS if on_disk else None)
    with stdout_to_stderr():
        faiss.write_index(index, str(folder / VECTORS))
    resident = (folder / VECTORS).stat().st_size
    memory = {"resident_bytes": resident, "resident_bytes_per_vector": round(resident / max(n, 1), 1)}
    if on_disk:
        memory["lists_disk_bytes"] = (folder / LISTS).stat().st_size
    if budget is not None:
        if resident > budget.max_memory:
            raise InvalidArgumentError(f"internal: the index takes {resident:,} B resident, over --max-memory "
                                       f"{budget.max_memory:,} B that {factory} was predicted to fit")
        memory["chosen"] = budget.to_dict(n)
        memory["max_memory"] = budget.max_memory
    ivf = faiss.try_extract_index_ivf(index)
    return {"index": {"factory": factory, "search": search, "ntotal": int(index.ntotal),
                      "nlist": None if ivf is None else int(ivf.nlist), "train_size": train_size,
                      "lists": "disk" if on_disk else "memory", "seed": config.seed,
                      "factory_requested": config.factory if budget is None else f"--max-memory {budget.max_memory}"},
            "memory": memory}


METADATA_ROWS = 262_144  # photos geocoded and inserted into DuckDB at a time


def _metadata(path: Path, rows, kept: np.ndarray) -> None:
    """``photos`` table: id (the FAISS id), image (as written), path (resolved), lat, lng, line,
    place, admin1, country (labelled as cells are: the admin-0 polygon, then its nearest place),
    cell (H3 res 15, for cell filters), metadata (JSON). Written :data:`METADATA_ROWS` photos at a
    time, in id order: the build never holds a frame of every photo's strings."""
    import duckdb
    import h3
    import pandas as pd

    from geoindex.cells.geocode import reverse_geocode

    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE photos (id BIGINT, image VARCHAR, path VARCHAR, lat DOUBLE, lng DOUBLE, line BIGINT, "
                    "place VARCHAR, admin1 VARCHAR, country VARCHAR, cell BIGINT, metadata VARCHAR)")
        for start in range(0, len(kept), METADATA_ROWS):
            part = kept[start : start + METADATA_ROWS]
            lat, lng = rows.photos.latlng[part, 0], rows.photos.latlng[part, 1]
            geo = reverse_geocode(lat, lng)
            frame = pd.DataFrame({
                "id": np.arange(start, start + len(part), dtype=np.int64),
                "image": pd.Series([rows.written[i] for i in part], dtype=object),
                "path": pd.Series([str(rows.photos.images[i]) for i in part], dtype=object),
                "lat": lat, "lng": lng, "line": rows.photos.lines[part],
                "place": geo.place, "admin1": geo.admin1, "country": geo.country,
                "cell": np.array([h3.str_to_int(h3.latlng_to_cell(a, b, 15)) for a, b in zip(lat, lng)], dtype=np.int64),
                "metadata": pd.Series([json.dumps(rows.metadata[i]) for i in part], dtype=object),
            })
            con.register("frame", frame)
            con.execute("INSERT INTO photos SELECT * FROM frame")
            con.unregister("frame")
    finally:
        con.close()


def _encoder_entry(clip_model: str, cache, files, config: PhotoBuildConfig) -> dict:
    from geoindex.hashing import sha256_file

    return {"clip_model": clip_model, "clip_checkpoint": cache.info.get("clip_checkpoint"),
            "weights_source": files.source, "image_head_sha256": sha256_file(files.image_head),
            "location_weights_sha256": sha256_file(files.location_encoder),
            "features": str(Path(config.features).resolve()) if config.features else None,
            "encoded_on": cache.info.get("device")}


