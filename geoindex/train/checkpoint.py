"""Training state on disk: whole checkpoints every ``checkpoint_every`` steps (the newest
``KEEP_CHECKPOINTS`` kept), resumed only under the same fingerprint, and the finished weights folder.

Every file is written whole (:mod:`geoindex.atomic`); ``weights.json`` is written last and marks
the weights folder complete.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from geoindex.atomic import atomic_path, write_json
from geoindex.encoders.weights import IMAGE_HEAD_FILE, LOCATION_ENCODER_FILE, LOGIT_SCALE_FILE, WEIGHTS_INFO_FILE
from geoindex.hashing import sha256_file
from geoindex.errors import TrainingDataError
from geoindex.train.config import FORMAT, FitConfig
from geoindex.pipeline.image_features import FeatureCache
from geoindex.train.model import GeoCLIPModel
from geoindex.train.queue import GPSQueue
from geoindex.workstate import check_same

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2


@dataclass
class TrainState:
    """Everything a resumed run needs besides the data: the model, optimiser, schedule, scaler,
    queue, the evaluation history and where in the run it is (``losses``: this epoch's so far)."""

    model: GeoCLIPModel
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    queue: GPSQueue
    history: list = field(default_factory=list)
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    losses: list = field(default_factory=list)


def latest_checkpoint(out: Path) -> Path | None:
    folder = out / CHECKPOINTS
    found = sorted(folder.glob("step-*.pt")) if folder.is_dir() else []
    return found[-1] if found else None


def resume(out: Path, state: TrainState, fingerprint: dict) -> Path | None:
    """Load the newest checkpoint of ``out`` into ``state``; None when there is none. A checkpoint
    of another fingerprint is refused, naming what differs."""
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        return None
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    check_same(saved["fingerprint"], fingerprint, lambda changed: TrainingDataError(
        f"{str(out)!r} holds checkpoints of another run ({', '.join(changed)} differ): run the same command "
        "as before to resume it, or pass --overwrite to start again"))
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.schedule.load_state_dict(saved["schedule"])
    state.scaler.load_state_dict(saved["scaler"])
    state.queue.load(saved["queue"])
    state.history = saved["history"]
    state.epoch, state.step_in_epoch, state.global_step = saved["epoch"], saved["step_in_epoch"], saved["global_step"]
    state.losses = list(saved.get("epoch_losses", []))
    return ckpt


def save_checkpoint(out: Path, state: TrainState, fingerprint: dict) -> Path:
    """Write a whole checkpoint of ``state``; keep the newest KEEP_CHECKPOINTS."""
    folder = out / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{state.global_step:09d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"fingerprint": fingerprint, "model": state.model.state_dict(),
                    "optimizer": state.optimizer.state_dict(), "schedule": state.schedule.state_dict(),
                    "scaler": state.scaler.state_dict(), "queue": state.queue.state(), "history": state.history,
                    "epoch": state.epoch, "step_in_epoch": state.step_in_epoch, "global_step": state.global_step,
                    "epoch_losses": list(state.losses)}, tmp)
    for old in sorted(folder.glob("step-*.pt"))[:-KEEP_CHECKPOINTS]:
        old.unlink()
    return path


def write_weights(out: Path, model: GeoCLIPModel, config: FitConfig, cache: FeatureCache, fingerprint: dict,
                  run: dict) -> None:
    """The weights folder: GeoCLIP's three files, then ``weights.json`` last (it marks the folder
    complete). ``run``: history, source, steps, seconds, steps_per_s, device."""
    model = model.cpu()
    parts = {
        LOCATION_ENCODER_FILE: model.location.to_geoclip_state_dict(),
        IMAGE_HEAD_FILE: {k: v.detach().float().clone() for k, v in model.head.state_dict().items()},
        LOGIT_SCALE_FILE: model.logit_scale.detach().float().clone(),
    }
    for name, value in parts.items():
        with atomic_path(out / name) as tmp:
            torch.save(value, tmp)
    info = {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "clip_model": cache.clip_model,
        "clip_checkpoint": cache.info.get("clip_checkpoint"),  # the backbone weights the features came from
        "width": cache.width,
        "started_from": run["source"],
        "features": {"path": str(Path(config.features).resolve()), "images": len(cache),
                     "fingerprint": cache.fingerprint()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()
                   if k not in ("out", "overwrite", "progress")},
        "fingerprint": fingerprint,
        "steps": run["steps"],
        "seconds_last_run": round(run["seconds"], 3),
        "steps_per_s_last_run": None if math.isnan(run["steps_per_s"]) else round(run["steps_per_s"], 3),
        "device": str(run["device"]),
        "history": run["history"],
        "files": {name: sha256_file(out / name) for name in parts},
    }
    write_json(out / WEIGHTS_INFO_FILE, info, indent=1)
