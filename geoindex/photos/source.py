"""Geotagged reference photos as a gallery source of the one gallery pipeline
(:func:`geoindex.pipeline.skeleton.run`): what a photo gallery does differently from a cell one.

- **encode**: CLIP image features into ``.REF.partial/features`` (the feature cache,
  :func:`geoindex.pipeline.image_features.cache_features`: shards written whole, so a killed build
  resumes where it stopped; unreadable photos are skipped and listed in ``REF/skipped.csv``), or a
  ``geoindex train features`` cache given with ``--photos-features`` (its CSV checksum and backbone
  must match; nothing is re-encoded). The work dir's fingerprint is what those features depend on.
- **train** and **add**: the index, streamed (:mod:`geoindex.photos.stream`): GeoCLIP's image head
  turns the cached features into (n, 512) float32 L2-normalised embeddings a batch at a time; the
  factory is :func:`~geoindex.photos.photo_index.choose_factory`'s, ``--factory``'s or what
  ``--max-memory`` fits; the fp16 exact store is written with the add, the lists go to
  ``lists.ivfdata`` with ``--lists-on-disk``.
- **check**: the search a reader runs (:func:`geoindex.photos.gallery.search_reranked`) on the
  gallery's own embeddings (from the exact store when there is one, else through the head).
- **metadata**: ``photos.duckdb`` (:func:`write_photos_table`) and ``skipped.csv``; the manifest of
  format ``geoindex-photos/1`` (:mod:`geoindex.photos.layout`).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from geoindex.cells.countries import labels_entry
from geoindex.errors import InvalidArgumentError, TrainingDataError
from geoindex.index.search import SearchSettings
from geoindex.photos import photo_index, stream
from geoindex.photos.gallery import search_reranked
from geoindex.photos.layout import FORMAT, PHOTOS_DB, SKIPPED, VECTORS
from geoindex.pipeline.self_check import CheckGallery
from geoindex.pipeline.workdir import work_dir_for
from geoindex.store.exact_store import STORE, open_store
from geoindex.store.manifest import LISTS, file_entries, versions

FEATURE_SHARD_ROWS = 4096  # photos a feature shard holds: the grain of resuming and of Ray's encoder actors
FEATURES_DTYPE = "float32"
METADATA_ROWS = 262_144  # photos geocoded and inserted into DuckDB at a time


class PhotoSource:
    """A photos CSV as a gallery source. ``config``: a :class:`~geoindex.photos.build.PhotoBuildConfig`
    whose refusals are made; ``out``: REF resolved; ``rows``: the CSV's checked rows; ``budget``: what
    ``--max-memory`` picked (None without it); ``files``: the GeoCLIP weights; ``clip_model``: the
    backbone's name; ``encode_device``: the device type the features are encoded on (None with
    ``--photos-features``)."""

    work_subdirs = ()

    def __init__(self, config, out: Path, rows, budget, files, clip_model: str, encode_device: str | None):
        from geoindex.encoders.clip import resolve_checkpoint

        self.config, self.out, self.rows, self.budget = config, out, rows, budget
        self.files, self.clip_model, self.encode_device = files, clip_model, encode_device
        self.work = work_dir_for(out)  # one work-dir rule for every kind: .REF.partial
        self.seed = config.seed
        self.checkpoint = resolve_checkpoint(clip_model, config.clip_checkpoint)
        self.disk_full_fix = (f"free space on that disk and run the same command again: the photos encoded so far "
                              f"are kept in {self.work} and resumed from")

    def fingerprint(self) -> dict:
        """What the features in the work dir depend on (nothing is encoded there with --photos-features)."""
        if self.config.features is not None:
            return {"kind": "photos", "features": str(Path(self.config.features).resolve())}
        root = self.config.image_root or Path(self.config.csv).resolve().parent
        return {"kind": "photos", "csv_sha256": self.rows.photos.csv_sha256, "image_root": str(Path(root).resolve()),
                "clip_model": self.clip_model, "clip_checkpoint": self.checkpoint,
                "device_type": self.encode_device, "shard_rows": FEATURE_SHARD_ROWS, "dtype": FEATURES_DTYPE,
                "backend": self.config.backend}  # torch and ONNX Runtime agree to ~1e-12, not bit for bit

    def encode(self, timer) -> None:
        t = timer.begin("encode")
        self.cache, cache_dir = self._features()
        self.skipped_csv = Path(cache_dir) / "skipped.csv"
        self.kept = np.concatenate([np.load(Path(cache_dir) / "shards" / f"{s:05d}" / "rows.npy")
                                    for s in range(len(self.cache.info["shards"]))])
        self.emb = stream.Embeddings(self.cache, self.config.weights)
        timer.add("features", t)

    def _features(self):
        """(FeatureCache, its folder): the given cache, checked, or one made (or resumed) in the work dir."""
        from geoindex.pipeline.image_features import FEATURES_FILE, FeatureCache, cache_features

        config, csv_sha = self.config, self.rows.photos.csv_sha256
        if config.features is not None:
            cache = FeatureCache(config.features)
            if cache.info.get("csv_sha256") != csv_sha:
                raise TrainingDataError(
                    f"--photos-features {str(config.features)!r} was made from another CSV than {str(config.csv)!r} "
                    "(checksums differ): give the CSV it was made from, or leave --photos-features out to encode "
                    "this one")
            if cache.clip_model != self.clip_model:
                raise TrainingDataError(
                    f"--photos-features {str(config.features)!r} holds {cache.clip_model} features, not "
                    f"{self.clip_model}: pass --clip-model {cache.clip_model}, or leave --photos-features out to "
                    f"encode with {self.clip_model}")
            return cache, Path(config.features)
        folder = self.work / "features"
        if not (folder / FEATURES_FILE).is_file():
            cache_features(config.csv, folder, clip_model=self.clip_model, clip_checkpoint=config.clip_checkpoint,
                           image_root=config.image_root, device=config.device, dtype=FEATURES_DTYPE,
                           shard_rows=FEATURE_SHARD_ROWS, progress=config.progress, ray=config.ray,
                           backend=config.backend)
        return FeatureCache(folder), folder

    def train(self, timer) -> None:
        """The factory and search settings (the budget's, the default rule's or the asked ones),
        whether the lists go to disk, and the index trained on the seeded sample."""
        t = timer.begin("train")
        n, config, budget = len(self.emb), self.config, self.budget
        asked = config.lists_on_disk
        if budget is not None:
            factory, search = budget.factory(n), budget.search(n)
        elif config.factory == "auto":
            if asked is None and n > photo_index.FLAT_MAX:
                asked = photo_index.lists_too_big(n)  # decided once: too big takes the mappable factory, on disk
            factory, search = photo_index.choose_factory(n, asked)
        else:
            factory, search = config.factory, ""
        self.factory, self.search = factory, search if config.search is None else str(config.search)
        self.index = stream.new_index(factory)
        self.on_disk = photo_index.lists_on_disk(asked, self.index, n)
        self.train_size = stream.train(self.index, self.emb, factory, config.seed)
        timer.add("train", t)

    def add(self, staging: Path, timer) -> tuple[faiss.Index, SearchSettings, bool]:
        t = timer.begin("add")
        search = SearchSettings.parse(self.search)
        index = stream.fill(self.index, self.emb, staging, bool(search.rerank_depth),
                            staging / LISTS if self.on_disk else None)
        self.index = None
        self.store = {"kind": "fp16", "file": STORE} if (staging / STORE).exists() else None
        timer.add("add", t)
        return index, search, self.on_disk

    def check(self, index: faiss.Index, staging: Path):
        """Queries answered as :class:`~geoindex.photos.gallery.PhotoGallery` answers them, and the
        gallery's own embeddings: read from the exact store (fp16, as the cell build's spilled
        vectors) when there is one, else computed again through the head."""
        n = len(self.emb)
        store = open_store(staging, self.store, n)
        depth = SearchSettings.parse(self.search).rerank_depth if store is not None else 0

        def search(xq: np.ndarray, k: int) -> np.ndarray:
            return search_reranked(index, store if depth else None, xq, min(max(k, depth), n))[1]

        def queries(m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
            rows = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
            return rows, store.vectors(rows) if store is not None else self.emb.take_sorted(rows)

        def vectors():
            if store is None:
                return self.emb.chunks()
            return ((ids, store.vectors(ids)) for ids in np.array_split(np.arange(n), -(-n // stream.ADD_CHUNK)))

        return search, CheckGallery(n, queries, vectors)

    def write_metadata(self, staging: Path, written: dict, timer) -> None:
        t = timer.begin("metadata_db")
        write_photos_table(staging / PHOTOS_DB, self.rows, self.kept)
        timer.add("metadata_db", t)
        shutil.copyfile(self.skipped_csv, staging / SKIPPED)

    def manifest(self, staging: Path, written: dict, check: dict, timings: dict, memory: dict) -> dict:
        n, rows = len(self.emb), self.rows
        names = [VECTORS, PHOTOS_DB, SKIPPED] + [f for f in (STORE, LISTS) if (staging / f).exists()]
        return {
            "format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "photos": n, "rows": len(rows.photos), "skipped": len(rows.photos) - n,
            "csv": {"path": str(Path(self.config.csv).resolve()), "sha256": rows.photos.csv_sha256,
                    "metadata_columns": rows.columns},
            "encoder": self._encoder_entry(),
            "index": self._index_entry(written), "memory": self._memory_entry(staging, n),
            "store": self.store, "labels": labels_entry(), "self_check": check,
            "timings_s": {k: round(v, 3) for k, v in timings.items()}, "peak_memory": memory,
            "versions": versions(), "files": file_entries(staging, tuple(names)),
        }

    def _index_entry(self, written: dict) -> dict:
        budget = self.budget
        return {"factory": self.factory, "search": self.search, "ntotal": written["ntotal"],
                "nlist": written["nlist"] or None, "train_size": self.train_size,
                "lists": "disk" if self.on_disk else "memory", "seed": self.seed,
                "factory_requested": self.config.factory if budget is None else f"--max-memory {budget.max_memory}"}

    def _memory_entry(self, staging: Path, n: int) -> dict:
        resident = (staging / VECTORS).stat().st_size
        memory = {"resident_bytes": resident, "resident_bytes_per_vector": round(resident / max(n, 1), 1)}
        if self.on_disk:
            memory["lists_disk_bytes"] = (staging / LISTS).stat().st_size
        if self.budget is not None:
            if resident > self.budget.max_memory:
                raise InvalidArgumentError(f"internal: the index takes {resident:,} B resident, over --max-memory "
                                           f"{self.budget.max_memory:,} B that {self.factory} was predicted to fit")
            memory["chosen"] = self.budget.to_dict(n)
            memory["max_memory"] = self.budget.max_memory
        return memory

    def _encoder_entry(self) -> dict:
        from geoindex.hashing import sha256_file

        files, config = self.files, self.config
        return {"clip_model": self.clip_model, "clip_checkpoint": self.cache.info.get("clip_checkpoint"),
                "weights_source": files.source, "image_head_sha256": sha256_file(files.image_head),
                "location_weights_sha256": sha256_file(files.location_encoder),
                "features": str(Path(config.features).resolve()) if config.features else None,
                "encoded_on": self.cache.info.get("device")}


def write_photos_table(path: Path, rows, kept: np.ndarray) -> None:
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
