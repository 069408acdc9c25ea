"""The training loop: GeoCLIP's image-to-GPS contrastive objective on a feature cache.

Each step takes a batch of cached CLIP image features and their coordinates, puts the batch's
coordinates beside a queue of recent ones (:class:`~geoindex.train.queue.GPSQueue`, with small
Gaussian noise on the queued coordinates), and minimises the cross-entropy of
``exp(logit_scale) * image @ gps.T`` whose targets are each image's own coordinates. Trained: the
image MLP head, the location encoder (unless frozen) and the temperature.

Everything random is drawn from generators seeded by (seed, epoch, step), so a run killed at any
step and resumed from its last checkpoint (:mod:`~geoindex.train.checkpoint`) ends with the same
weights, bit for bit, as one that was never stopped.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geoindex.encoders.weights import WEIGHTS_INFO_FILE
from geoindex.errors import InvalidArgumentError, TrainingDataError
from geoindex.train.checkpoint import CHECKPOINTS, TrainState, resume, save_checkpoint, write_weights
from geoindex.train.config import FitConfig, FitReport, lr_lambda
from geoindex.train.evaluation import eval_galleries, evaluate, log_eval
from geoindex.pipeline.image_features import FeatureCache
from geoindex.train.model import initial_model
from geoindex.train.queue import GPSQueue

log = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100)  # CLIP's clamp of the learnt temperature
KILL_ENV = "GEOINDEX_TRAIN_KILL_AT_STEP"  # fault injection for the resume tests: os._exit before this step


def split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) photo numbers, a seeded random split; both sorted."""
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_out = max(1, int(round(n * holdout)))
    if n - n_out < 2:
        raise TrainingDataError(f"{n} photos leave fewer than 2 to train on after holding out {holdout:.0%}: "
                                "cache more photos")
    return np.sort(order[n_out:]), np.sort(order[:n_out])


def _check_out(config: FitConfig, out: Path) -> None:
    if (out / WEIGHTS_INFO_FILE).is_file() and not config.overwrite:
        raise TrainingDataError(f"--out {str(out)!r} already holds trained weights: pass --overwrite to train "
                                "again, or another --out")
    if out.exists() and any(out.iterdir()) and not (out / CHECKPOINTS).is_dir() and not (out / WEIGHTS_INFO_FILE).is_file():
        raise TrainingDataError(f"--out {str(out)!r} exists and is not a training folder: give an empty or new folder")
    for other, flag in ((config.base_weights, "--base-weights"), (config.features, "--features")):
        if other is not None and Path(other).resolve() == out.resolve():
            raise TrainingDataError(f"--out {str(out)!r} is also {flag}: write the trained weights to another folder")


def _new_state(config: FitConfig, cache: FeatureCache, device: torch.device, amp: bool,
               steps_per_epoch: int) -> tuple[TrainState, str | None, str]:
    """The state training starts from, the base weights' SHA-256 and where they came from."""
    torch.manual_seed(config.seed)
    model, base_sha, source = initial_model(config, cache.width)
    model = model.to(device).train()
    model.location.requires_grad_(not config.freeze_location)
    model.head.requires_grad_(True)
    model.logit_scale.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    return TrainState(model, optimizer, schedule, scaler, GPSQueue(config.queue_size)), base_sha, source


def _step(state: TrainState, config: FitConfig, cache: FeatureCache, rows: np.ndarray, device: torch.device,
          amp: bool, criterion: nn.Module) -> float:
    """One optimiser step on the photos ``rows``; the loss."""
    rng = np.random.default_rng([config.seed, state.epoch, state.step_in_epoch])
    views = rng.integers(0, cache.views, len(rows)) if cache.views > 1 else None
    feats = torch.from_numpy(cache.take(rows, views)).to(device)
    gps = cache.latlng[rows]
    gps_all = np.concatenate([gps, state.queue.sample(rng, config.queue_noise_km)])
    state.queue.push(gps)
    model = state.model
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        logits = model.logit_scale.exp() * model.images(feats) @ model.gps(torch.from_numpy(gps_all).float().to(device)).T
        loss = criterion(logits.float(), torch.arange(len(rows), device=device))
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.schedule.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    value = loss.item()
    if not math.isfinite(value):
        raise TrainingDataError(f"the loss became {value} at step {state.global_step + 1}: lower --lr "
                                f"(now {config.lr:g})")
    return value


def _epoch(state: TrainState, config: FitConfig, cache: FeatureCache, train_rows: np.ndarray, batch: int,
           steps_per_epoch: int, device: torch.device, amp: bool, out: Path, fingerprint: dict, bar) -> int:
    """Run the rest of the current epoch; return the steps run. Checkpoints every ``checkpoint_every``."""
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    criterion = nn.CrossEntropyLoss()
    order = np.random.default_rng([config.seed, state.epoch]).permutation(train_rows)
    ran = 0
    while state.step_in_epoch < steps_per_epoch:
        if kill_at and state.global_step == kill_at:
            os._exit(137)  # as a kill -9 would: nothing flushed, nothing cleaned up
        rows = order[state.step_in_epoch * batch : (state.step_in_epoch + 1) * batch]
        value = _step(state, config, cache, rows, device, amp, criterion)
        state.losses.append(value)
        state.step_in_epoch += 1
        state.global_step += 1
        ran += 1
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}", epoch=state.epoch + 1)
        if state.global_step % config.checkpoint_every == 0 and state.step_in_epoch < steps_per_epoch:
            save_checkpoint(out, state, fingerprint)
    return ran


def _end_epoch(state: TrainState, cache: FeatureCache, held_rows: np.ndarray, galleries: list,
               device: torch.device, out: Path, fingerprint: dict) -> None:
    state.epoch, state.step_in_epoch = state.epoch + 1, 0
    record = {"epoch": state.epoch, "step": state.global_step,
              "train_loss": round(float(np.mean(state.losses)), 5) if state.losses else None,
              "logit_scale": round(float(state.model.logit_scale.detach().exp()), 3)}
    if galleries:
        record.update(evaluate(state.model, cache, held_rows, galleries, device, trained=True))
    state.history.append(record)
    state.losses = []
    log_eval(record)
    save_checkpoint(out, state, fingerprint)


def fit(config: FitConfig) -> FitReport:
    """Train (or resume training) and write the weights folder ``config.out``."""
    from tqdm import tqdm

    from geoindex.encoders.location import pick_device

    cache = FeatureCache(config.features)
    out = Path(config.out)
    _check_out(config, out)
    device = pick_device(config.device)
    amp = (device.type == "cuda") if config.amp is None else config.amp
    if amp and device.type != "cuda":
        raise InvalidArgumentError("--amp (fp16 mixed precision) needs CUDA: on the CPU training runs in fp32")
    train_rows, held_rows = split(len(cache), config.holdout, config.seed)
    if len(held_rows) > config.eval_max:
        held_rows = np.sort(np.random.default_rng([config.seed, 11]).choice(held_rows, config.eval_max, replace=False))
    batch = min(config.batch_size, len(train_rows))
    steps_per_epoch = len(train_rows) // batch  # the last partial batch is dropped (a new order each epoch)
    state, base_sha, source = _new_state(config, cache, device, amp, steps_per_epoch)
    fingerprint = {**config.fingerprint(cache, base_sha), "amp": amp, "device_type": device.type}
    if config.overwrite and out.exists():
        shutil.rmtree(out)  # only now: everything it starts from has loaded
    ckpt = resume(out, state, fingerprint)
    resumed_from = None if ckpt is None else state.global_step
    if ckpt is not None:
        log.info("resuming from %s (epoch %d, step %d)", ckpt.name, state.epoch + 1, state.global_step)
    galleries = eval_galleries(config, base_sha)
    if not state.history and galleries and state.global_step == 0:  # the baseline: before any step
        state.history.append({"epoch": 0, "step": 0, **evaluate(state.model, cache, held_rows, galleries, device,
                                                                trained=False)})
        log_eval(state.history[-1])
    start, steps_run = time.perf_counter(), 0
    with tqdm(total=config.epochs * steps_per_epoch, initial=state.global_step, unit="step",
              disable=not config.progress, desc="fit") as bar:
        while state.epoch < config.epochs:
            steps_run += _epoch(state, config, cache, train_rows, batch, steps_per_epoch, device, amp, out,
                                fingerprint, bar)
            _end_epoch(state, cache, held_rows, galleries, device, out, fingerprint)
    seconds = time.perf_counter() - start
    steps_per_s = steps_run / seconds if seconds > 0 and steps_run else float("nan")
    write_weights(out, state.model, config, cache, fingerprint,
                  {"history": state.history, "source": source, "steps": state.global_step, "seconds": seconds,
                   "steps_per_s": steps_per_s, "device": device})
    return FitReport(out, state.global_step, seconds, steps_per_s, state.history, resumed_from, str(device))
