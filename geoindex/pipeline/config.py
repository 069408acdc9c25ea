"""What a caller asks of a build (:class:`BuildConfig`) and what it gets back (:class:`BuildResult`).

The config is loose input, as a user gives it (``resolution`` may be ``"03"``); the build turns it
into a frozen :class:`~geoindex.pipeline.plan.BuildPlan` before any work, and reads only the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoindex.cells.region import RegionFilter
from geoindex.index import budget
from geoindex.index.search import SearchSettings


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides an index: an H3 gallery (``resolution``) or a CSV one (``gallery_csv``).

    Args:
        out: The index directory to create (its parent must be writable).
        resolution: H3 resolution 0-9 of the gallery cells (an int, or a string such as ``"3"``
            or ``"03"``: all three build, and resume, the same index). None with ``gallery_csv``.
        cells: ``"land"`` (a cell whose centre or a vertex is on land) or ``"all"`` (oceans too).
        gallery_csv: A CSV of lat, lng rows instead of H3 cells; ids are row numbers.
        factory: A FAISS factory string (``"IVFH3,SQ8"``, ``"IVF,PQ64,RFlat"``, ``"Flat"``) or
            ``"auto"``: the measured default for the resolution.
        search: The index's default search settings (a :class:`SearchSettings` or a string such
            as ``"nprobe=16,rerank=32"``); None: the factory's default.
        batch_size: Points per encoder batch (memory only: the vectors do not depend on it).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"`` (exact); ``"fp16"`` or ``"bf16"`` on CUDA only.
        overwrite: Replace a non-empty ``out``.
        seed: Seed of the training sample and of the self-check's queries.
        progress: Show progress bars (on stderr).
        store: Exact vectors kept on disk for re-ranking: ``"fp16"``, ``"sq8"``, ``"fp32"``,
            ``"none"``, or ``"auto"`` (fp16 when the search settings re-rank).
        max_memory: A resident budget in bytes (or a size string, ``"30MB"``): the build picks the
            fastest measured factory and search settings that fit.
        region: Only the cells inside this region (:func:`geoindex.make_filter`).
        lists_on_disk: IVF inverted lists in ``out/lists.ivfdata``, memory-mapped by readers; None:
            only when they would take over half of this machine's memory.
        ray: Build on a Ray cluster: ``"auto"`` or a cluster address; None: in this process.
        weights: A GeoCLIP weights folder (``geoindex train fit --out``); None: the released weights.

    Raises:
        InvalidArgumentError: ``search`` or ``max_memory`` is a malformed string (every other
            check is made by :func:`~geoindex.pipeline.build` before any work).
    """

    out: Path
    resolution: int | str | None = None
    cells: str = "land"
    gallery_csv: Path | None = None
    factory: str = "auto"
    search: SearchSettings | None = None
    batch_size: int = 8192
    device: str = "auto"
    precision: str = "fp32"
    overwrite: bool = False
    seed: int = 1234
    progress: bool = True
    store: str = "auto"
    max_memory: int | None = None
    region: RegionFilter | None = None
    lists_on_disk: bool | None = None
    ray: str | None = None
    weights: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.search, str):
            object.__setattr__(self, "search", SearchSettings.parse(self.search))
        if isinstance(self.max_memory, str):
            object.__setattr__(self, "max_memory", budget.parse_size(self.max_memory))
        if self.region is not None and not self.region:
            object.__setattr__(self, "region", None)  # an empty filter is the whole gallery


@dataclass
class BuildResult:
    """A finished build.

    Args:
        path: The published index directory.
        manifest: Its ``manifest.json`` (gallery, encoder, index, store, memory, timings).
        check: The self-check: ``queries``, ``self_hit_at_1``, ``recall_at_10``.
    """

    path: Path
    manifest: dict[str, Any]
    check: dict[str, Any] = field(default_factory=dict)
