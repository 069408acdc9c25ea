"""The build plan: every decision that depends only on the arguments, made once, before any work.

:func:`make_plan` turns a :class:`~geoindex.pipeline.config.BuildConfig` (loose input: ``"03"``, a
factory string with spaces, a weights folder) into a frozen :class:`BuildPlan` (an int resolution,
the canonical factory and search strings, the weights resolved once with their SHA-256, the store,
spill dtype, device and precision, the Ray actors) and makes every refusal that needs no gallery:
each happens here, before enumeration or encoding, and leaves nothing on disk. The stages read the
plan, never the config. Decisions that need the gallery's cells (the index of a regional or
``--max-memory`` build, lists on disk when not asked) are the index stage's (:mod:`.index_stage`).

:meth:`BuildPlan.fingerprint` is what the shard files depend on; the work dir resumes only when it
matches, so ``3``, ``"3"`` and ``"03"`` resume each other and ``batch_size`` (memory only) is not in it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from geoindex.pipeline import distributed
from geoindex.pipeline.config import BuildConfig
from geoindex.pipeline.workdir import check_output, work_dir_for
from geoindex.cells import csv_gallery, gallery
from geoindex.cells.region import RegionFilter, check_build_region, region_to_dict
from geoindex.encoders.location import pick_device
from geoindex.encoders.weights import GeoclipFiles, geoclip_files
from geoindex.errors import InvalidArgumentError
from geoindex.hashing import sha256_file
from geoindex.index import budget
from geoindex.index.disk import lists_mappable, unmappable_error
from geoindex.index import factory as index_factory
from geoindex.index.search import SearchSettings
from geoindex.store import exact_store

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class BuildPlan:
    """The arguments of a build, normalised and checked (see the module docstring).

    ``resolution``: int, None for a CSV gallery (``csv_latlng`` (n, 2) float64 lat, lng, read and
    checked once, with ``csv_sha256``). ``factory``: canonical, maybe ``"auto"``; ``index_known``:
    the factory needs no cell count (then lists on disk were checked here). ``device``: where the
    driver's encoder runs (all encoding, or only the self-check with Ray); ``encode_device_type``
    and ``precision``: what the shards are encoded with.
    """

    out: Path
    work: Path
    resolution: int | None
    cells: str
    region: RegionFilter | None
    gallery_csv: Path | None
    csv_sha256: str | None
    factory: str
    search: SearchSettings | None
    store: str
    max_memory: int | None
    lists_on_disk: bool | None
    index_known: bool
    spill_dtype: str
    weights: GeoclipFiles
    weights_sha256: str
    logit_scale: float
    device: torch.device
    encode_device_type: str
    precision: str
    driver_precision: str
    ray_actors: int | None
    batch_size: int
    seed: int
    progress: bool
    overwrite: bool
    weights_dir: Path | None = None
    csv_latlng: np.ndarray | None = field(default=None, compare=False, repr=False)

    def fingerprint(self) -> dict:
        """What the shard files depend on (normalised: an int resolution, the weights' hash)."""
        if self.csv_sha256 is not None:
            source = {"kind": "csv", "sha256": self.csv_sha256}
        else:
            source = {"kind": "h3", "resolution": self.resolution, "cells": self.cells,
                      **({"region": region_to_dict(self.region)} if self.region else {})}
        return {"gallery": source, "weights_sha256": self.weights_sha256, "precision": self.precision,
                "device_type": self.encode_device_type, "shard_depth": gallery.SHARD_DEPTH,
                "spill_dtype": self.spill_dtype}

    @property
    def device_label(self) -> str:
        """The encoder's device as the manifest records it."""
        if self.ray_actors is not None:
            return f"{self.ray_actors} Ray {self.encode_device_type} actors"
        return str(self.device)


def make_plan(config: BuildConfig) -> BuildPlan:
    """Check ``config`` and decide everything that depends only on it; raise the first refusal
    (an InvalidArgumentError, IndexDirError or WeightsNotFoundError naming the value and the fix)
    before anything is enumerated, encoded or written."""
    resolution, csv_latlng, csv_sha = _gallery(config)
    n_rows = None if csv_latlng is None else len(csv_latlng)
    factory, search = index_factory.canonical_factory(config.factory), config.search
    _check_numbers(config)
    exact_store.check_kind(config.store)
    if config.region and factory == "auto" and search is not None:
        raise InvalidArgumentError("a regional build picks its index by how many cells the region holds: "
                                   "give --factory too when you give --search (e.g. --factory IVF,SQ8)")
    if config.max_memory is not None:
        budget.check_request(config.max_memory, factory, search, resolution)
    index_known = not (config.region and factory == "auto") and config.max_memory is None
    if not (config.region and factory == "auto"):  # else known once the region's cells are
        probe = index_factory.check_factory(factory, resolution, search, n_rows)
        if index_known and config.lists_on_disk and not lists_mappable(probe):
            raise unmappable_error(factory if factory != "auto" else index_factory.auto_factory(resolution, n_rows),
                                   MAPPABLE_EXAMPLE)
    out = Path(config.out).resolve()
    check_output(out, config.overwrite)
    files = geoclip_files(config.weights)
    device, encode_type, ray_actors, driver_precision = _devices(config)
    return BuildPlan(
        out=out, work=work_dir_for(out), resolution=resolution, cells=config.cells, region=config.region,
        gallery_csv=None if config.gallery_csv is None else Path(config.gallery_csv), csv_sha256=csv_sha,
        factory=factory, search=search, store=config.store, max_memory=config.max_memory,
        lists_on_disk=config.lists_on_disk, index_known=index_known,
        spill_dtype=_spill_dtype(config, factory, resolution).name,
        weights=files, weights_sha256=sha256_file(files.location_encoder),
        logit_scale=float(torch.load(files.logit_scale, weights_only=True)),
        device=device, encode_device_type=encode_type, precision=config.precision,
        driver_precision=driver_precision, ray_actors=ray_actors, batch_size=config.batch_size,
        seed=config.seed, progress=config.progress, overwrite=config.overwrite,
        weights_dir=config.weights, csv_latlng=csv_latlng,
    )


def _gallery(config: BuildConfig) -> tuple[int | None, np.ndarray | None, str | None]:
    """(resolution, CSV rows, CSV SHA-256): the H3 gallery checked, or the CSV read and checked."""
    if config.gallery_csv is not None:
        if config.resolution is not None:
            raise InvalidArgumentError("give --resolution (H3 cells) or --gallery-csv (your rows), not both")
        if config.region:
            raise InvalidArgumentError("--country/--bbox/--cells select H3 cells; a CSV gallery holds its own rows: "
                                       "keep only the rows you want in the CSV")
        latlng = csv_gallery.read_gallery_csv(config.gallery_csv)
        return None, latlng, sha256_file(Path(config.gallery_csv))
    if config.resolution is None:
        raise InvalidArgumentError("a build needs --resolution R (H3 cells) or --gallery-csv FILE (lat,lng rows)")
    resolution = gallery.validate_resolution(config.resolution)
    gallery.validate_cells(config.cells)
    if config.region:
        check_build_region(config.region, resolution)
    return resolution, None, None


def _check_numbers(config: BuildConfig) -> None:
    if isinstance(config.batch_size, bool) or not isinstance(config.batch_size, int) or config.batch_size <= 0:
        raise InvalidArgumentError(f"--batch-size {config.batch_size} must be positive: try 8192")
    if config.max_memory is not None and (isinstance(config.max_memory, bool) or config.max_memory <= 0):
        raise InvalidArgumentError(f"--max-memory {config.max_memory!r} must be a positive size, e.g. 30MB or 4GiB")
    if config.precision not in PRECISIONS:
        raise InvalidArgumentError(f"--precision {config.precision!r} is not one of {', '.join(PRECISIONS)}: "
                                   "use fp32 (exact)")


MAPPABLE_EXAMPLE = "IVFH3,PQ32"  # a cell-gallery factory whose lists can go to disk, for the refusal


def _devices(config: BuildConfig) -> tuple[torch.device, str, int | None, str]:
    """(the driver's device, the encoders' device type, Ray actors or None, the driver's precision)."""
    if config.ray is None:
        device = pick_device(config.device)
        _check_precision(config.precision, device.type)
        return device, device.type, None, config.precision
    actors, encode_type = distributed.actor_plan(distributed.connect(config.ray), config.device)
    _check_precision(config.precision, encode_type)
    # the actors encode; the driver's encoder serves the self-check only
    device = pick_device("cpu" if config.device == "cpu" else "auto")
    return device, encode_type, actors, config.precision if device.type == "cuda" else "fp32"


def _check_precision(precision: str, device_type: str) -> None:
    if precision != "fp32" and device_type != "cuda":
        raise InvalidArgumentError(f"--precision {precision} needs a CUDA device (on CPU it is slower and less "
                                   "exact): use --precision fp32")


def _spill_dtype(config: BuildConfig, factory: str, resolution: int | None) -> np.dtype:
    """The dtype shard files keep vectors in: float16 when the index will keep an fp16 exact store
    (asked for, or the global default from res 5 up), since that store is all that outlives the
    build; else float32, the encoder's output bit for bit."""
    if config.store == "fp16":
        return np.dtype(np.float16)
    default = (config.store == "auto" and factory == "auto" and config.max_memory is None
               and not config.region and resolution is not None)
    if default and index_factory.auto_choice(resolution)[1].rerank_depth:
        return np.dtype(np.float16)
    return np.dtype(np.float32)
