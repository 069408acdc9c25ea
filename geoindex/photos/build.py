"""``geoindex build --photos photos.csv --out REF``: reference photos -> GeoCLIP image embeddings in FAISS,
their places and metadata in DuckDB, built by the one gallery pipeline
(:func:`geoindex.pipeline.skeleton.run`) with the photos as its source (:class:`~geoindex.photos.source.PhotoSource`).

Every refusal that needs only the arguments (``--out``, by the check every gallery kind makes:
:func:`geoindex.pipeline.workdir.check_output`; ``--factory``, ``--search``, ``--lists-on-disk``,
``--max-memory``), then every CSV row checked (:func:`geoindex.photos.rows.read_reference_rows`)
and the refusals that need the row count (:mod:`geoindex.photos.photo_index`): all before any photo
is opened. Then, as for a cell index: one builder per REF (the lock), the work dir ``.REF.partial``
resumed when its fingerprint matches (the features encoded so far) and emptied when not, the
index written into its ``staging/`` and checked against its own embeddings (the manifest's
``self_check``), and REF published whole: either the old gallery or the complete new one, the
manifest listing every file's SHA-256.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from geoindex.errors import InvalidArgumentError
from geoindex.index.search import SearchSettings
from geoindex.photos import photo_index
from geoindex.photos.source import FEATURE_SHARD_ROWS, PhotoSource
from geoindex.pipeline.skeleton import run
from geoindex.pipeline.workdir import check_output

__all__ = ["FEATURE_SHARD_ROWS", "PhotoBuildConfig", "build_photos"]


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

    started = time.perf_counter()
    out, max_memory = _check_args(config)
    encode_device = None  # with --photos-features nothing is encoded
    if config.ray is not None:  # join the cluster (and size its pool) before any photo is read
        from geoindex.pipeline.distributed import actor_plan, connect

        encode_device = actor_plan(connect(config.ray), config.device)[1]
    elif config.features is None:
        encode_device = _device_type(config.device)
    files = geoclip_files(config.weights)
    clip_model = clip_model_for(config.clip_model, files)
    rows = read_reference_rows(config.csv, config.image_root)
    budget = _check_rows(config, max_memory, len(rows.photos))
    return run(PhotoSource(config, out, rows, budget, files, clip_model, encode_device), started)[0]


def _check_args(config: PhotoBuildConfig) -> tuple[Path, int | None]:
    """(REF resolved, the budget in bytes): the refusals that need only the arguments."""
    from geoindex.index.budget import parse_size

    out = Path(config.out).resolve()
    check_output(out, config.overwrite)
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


def _device_type(device: str) -> str:
    """The device type the features will be encoded on (``auto``: CUDA when torch sees one); the
    encoder itself checks the device and says so when it falls back."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type
