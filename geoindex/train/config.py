"""A training run's settings (:class:`FitConfig`), its learning-rate schedule and its report.

What changes the weights is in :meth:`FitConfig.fingerprint`: a run resumes from its checkpoints
only when that is equal (:mod:`geoindex.workstate`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from geoindex.errors import InvalidArgumentError
from geoindex.pipeline.image_features import FeatureCache

FORMAT = 1
SCHEDULES = ("cosine", "step", "constant")
STEP_GAMMA = 0.87  # the "step" schedule: lr x 0.87 per epoch, as GeoCLIP's StepLR


@dataclass(frozen=True)
class FitConfig:
    """One training run. What changes the weights is in :meth:`fingerprint`; a resume needs it equal."""

    features: Path
    out: Path
    epochs: int = 10
    batch_size: int = 256
    lr: float = 3e-5
    weight_decay: float = 0.01
    schedule: str = "cosine"  # cosine (after a linear warm-up), step (x0.87 per epoch), constant
    warmup_steps: int = 100
    queue_size: int = 4096  # 0: the batch alone (plain CLIP loss)
    queue_noise_km: float = 1.0  # std of the Gaussian noise on queued coordinates; 0: none
    init: str = "released"  # released: start from GeoCLIP's weights (or --base-weights); scratch: random
    base_weights: Path | None = None  # a weights folder to start from instead of the released one
    new_head: bool = False  # a fresh image head (needed when the backbone's width differs from the head's)
    freeze_location: bool = False  # train the image head and temperature only
    holdout: float = 0.1  # share of photos held out for evaluation
    eval_max: int = 5000  # held-out photos evaluated per epoch (a seeded subset when there are more)
    eval_gallery: str = "100k"  # "100k" (GeoCLIP's gallery), "none", or a CSV/Parquet of lat,lng
    eval_index: Path | None = None  # also evaluate against this index's cells
    seed: int = 0
    checkpoint_every: int = 500
    device: str = "auto"
    amp: bool | None = None  # fp16 autocast; None: on CUDA, never on the CPU
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "checkpoint_every", "eval_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidArgumentError(f"--{name.replace('_', '-')} {value!r} must be a positive integer")
        for name in ("queue_size", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(f"--{name.replace('_', '-')} {value!r} must be an integer >= 0")
        if self.batch_size < 2:
            raise InvalidArgumentError(f"--batch-size {self.batch_size} is too small: contrastive training needs "
                                       "at least 2 photos per batch (GeoCLIP used 512)")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not (self.weight_decay >= 0):
            raise InvalidArgumentError(f"--lr {self.lr} must be > 0 and --weight-decay {self.weight_decay} >= 0")
        if not (0 <= self.queue_noise_km < 1000):
            raise InvalidArgumentError(f"--queue-noise-km {self.queue_noise_km} must be in [0, 1000) km")
        if not (0 < self.holdout < 1):
            raise InvalidArgumentError(f"--holdout {self.holdout} must be a share in (0, 1), e.g. 0.1")
        if self.schedule not in SCHEDULES:
            raise InvalidArgumentError(f"--schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.init not in ("released", "scratch"):
            raise InvalidArgumentError(f"--init {self.init!r} is not released or scratch")
        if self.init == "scratch" and self.base_weights is not None:
            raise InvalidArgumentError("--init scratch and --base-weights contradict each other: give one")

    def fingerprint(self, features: FeatureCache, base_sha: str | None) -> dict:
        """What the weights depend on: a checkpoint is resumed only when this is equal."""
        skip = {"out", "overwrite", "progress", "device", "eval_max", "eval_gallery", "eval_index", "features",
                "base_weights"}
        out = {k: v for k, v in asdict(self).items() if k not in skip}
        return {**out, "features": features.fingerprint(), "base_weights_sha256": base_sha, "format": FORMAT}



def lr_lambda(config: FitConfig, steps_per_epoch: int):
    total = config.epochs * steps_per_epoch
    warmup = min(config.warmup_steps, total // 10) if config.schedule == "cosine" else 0

    def factor(step: int) -> float:
        if config.schedule == "constant":
            return 1.0
        if config.schedule == "step":
            return STEP_GAMMA ** (step // steps_per_epoch)
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor



@dataclass
class FitReport:
    out: Path
    steps: int
    seconds: float
    steps_per_s: float
    history: list = field(default_factory=list)
    resumed_from: int | None = None
    device: str = "cpu"

