"""Training: GeoCLIP's image-to-GPS contrastive objective on a feature cache.

Each step takes a batch of cached CLIP image features and their coordinates, puts the batch's
coordinates beside a queue of recent ones (:class:`GPSQueue`: GeoCLIP's dynamic queue, with small
Gaussian noise on the queued coordinates), and minimises the cross-entropy of
``exp(logit_scale) * image @ gps.T`` whose targets are each image's own coordinates. Trained: the
image MLP head, the location encoder (unless frozen) and the temperature.

Everything random is drawn from generators seeded by (seed, epoch, step) — the epoch's order, each
photo's augmented view, the queue's noise — so a run killed at any step and resumed from its last
checkpoint ends with the same weights, bit for bit, as one that was never stopped. Checkpoints
(model, optimiser, schedule, queue, history) are written whole every ``checkpoint_every`` steps and
at each epoch's end. A held-out split is evaluated before training and after every epoch with the
accuracy harness (:mod:`geoindex.train.evaluate`), against GeoCLIP's 100K gallery and/or an index.

The result is a weights folder in GeoCLIP's own file layout (the three ``.pth`` files) plus
``weights.json``: ``build_index``, ``geolocate`` and ``geoindex-serve`` take it as ``--weights``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geoindex.cells.geocode import haversine_km
from geoindex.encoders.weights import (
    IMAGE_HEAD_FILE,
    LOCATION_ENCODER_FILE,
    LOGIT_SCALE_FILE,
    WEIGHTS_INFO_FILE,
    geoclip_files,
    sha256_file,
)
from geoindex.errors import InvalidArgumentError, TrainingDataError
from geoindex.train.evaluate import accuracy_table
from geoindex.train.features import FeatureCache

log = logging.getLogger(__name__)

FORMAT = 1
KM_PER_DEGREE = 111.195  # great-circle km per degree of latitude (mean Earth radius 6,371 km)
MAX_LOGIT_SCALE = math.log(100)  # CLIP's clamp of the learnt temperature
SCHEDULES = ("cosine", "step", "constant")
STEP_GAMMA = 0.87  # the "step" schedule: lr x 0.87 per epoch, as GeoCLIP's StepLR
KILL_ENV = "GEOINDEX_TRAIN_KILL_AT_STEP"  # fault injection for the resume tests: os._exit before this step
CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2


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


class GPSQueue:
    """GeoCLIP's dynamic queue of recent coordinates: a ring of ``size`` (lat, lng) rows.

    Unlike the released code's, it starts empty (not with random unit vectors taken for degrees),
    takes batches of any size (wrapping round the end), and its state is saved in checkpoints.
    """

    def __init__(self, size: int):
        self.size = size
        self.coords = np.zeros((size, 2), dtype=np.float64)
        self.ptr = 0
        self.filled = 0

    def push(self, latlng: np.ndarray) -> None:
        if self.size == 0:
            return
        latlng = latlng[-self.size :]
        n = len(latlng)
        end = self.ptr + n
        if end <= self.size:
            self.coords[self.ptr : end] = latlng
        else:
            first = self.size - self.ptr
            self.coords[self.ptr :] = latlng[:first]
            self.coords[: n - first] = latlng[first:]
        self.ptr = end % self.size
        self.filled = min(self.size, self.filled + n)

    def sample(self, rng: np.random.Generator, noise_km: float) -> np.ndarray:
        """The queued coordinates, each moved by Gaussian noise of ``noise_km`` (lat clipped, lng wrapped)."""
        coords = self.coords[: self.filled].copy()
        if noise_km > 0 and len(coords):
            step = rng.normal(0.0, noise_km / KM_PER_DEGREE, size=coords.shape)
            coords[:, 0] = np.clip(coords[:, 0] + step[:, 0], -90, 90)
            stretch = np.maximum(np.cos(np.radians(coords[:, 0])), 1e-3)
            coords[:, 1] = (coords[:, 1] + step[:, 1] / stretch + 180) % 360 - 180
        return coords

    def state(self) -> dict:
        return {"coords": torch.from_numpy(self.coords.copy()), "ptr": self.ptr, "filled": self.filled}

    def load(self, state: dict) -> None:
        self.coords = state["coords"].numpy().copy()
        self.ptr, self.filled = int(state["ptr"]), int(state["filled"])


class GeoCLIPModel(nn.Module):
    """The trained parts: image head (CLIP features -> 512), location encoder, log temperature."""

    def __init__(self, head: nn.Sequential, location: nn.Module, logit_scale: float):
        super().__init__()
        self.head = head
        self.location = location
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))

    def images(self, feats: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(feats).float(), dim=1)

    def gps(self, latlng: torch.Tensor) -> torch.Tensor:
        with torch.autocast(latlng.device.type, enabled=False):  # the phases need float32 (sigma 2^8)
            feats = self.location.fourier_features(latlng.float())
        return nn.functional.normalize(self.location.from_features(feats).float(), dim=1)


def initial_model(config: FitConfig, width: int) -> tuple[GeoCLIPModel, str | None, str]:
    """The model training starts from, the SHA-256 of its location weights (None from scratch),
    and where it came from."""
    from geoindex.encoders.clip import head_width, load_geoclip_head, make_head
    from geoindex.encoders.location import LocationEncoder, location_state_dict

    if config.init == "scratch":
        torch.manual_seed(config.seed)
        return GeoCLIPModel(make_head(width), random_location_encoder(config.seed), math.log(1 / 0.07)), None, "scratch"
    files = geoclip_files(config.base_weights)
    location = LocationEncoder.from_geoclip_state_dict(location_state_dict(config.base_weights))
    head = load_geoclip_head(config.base_weights)
    if config.new_head:
        torch.manual_seed(config.seed)
        head = make_head(width)
    elif head_width(head) != width:
        raise TrainingDataError(
            f"the features are {width}-d but the GeoCLIP head in {files.source} takes {head_width(head)}-d: "
            f"cache features with the backbone it was trained on, or pass --new-head to train a new head for {width}-d"
        )
    scale = float(torch.load(files.logit_scale, map_location="cpu", weights_only=True))
    return GeoCLIPModel(head, location, scale), sha256_file(files.location_encoder), files.source


def random_location_encoder(seed: int) -> nn.Module:
    """A GeoCLIP location encoder with fresh weights: Fourier frequencies ~ N(0, sigma^2) per branch
    (sigma 2^0, 2^4, 2^8, as the released model drew them) and PyTorch's default Linear init."""
    from geoindex.encoders.location import SIGMAS, LocationEncoder

    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, sigma in enumerate(SIGMAS):
        state[f"LocEnc{i}.capsule.0.b"] = sigma * torch.randn(256, 2, generator=g)
        for key, (n_out, n_in) in (("capsule.1", (1024, 512)), ("capsule.3", (1024, 1024)),
                                   ("capsule.5", (1024, 1024)), ("head.0", (512, 1024))):
            bound = 1 / math.sqrt(n_in)
            state[f"LocEnc{i}.{key}.weight"] = (torch.rand(n_out, n_in, generator=g) * 2 - 1) * bound
            state[f"LocEnc{i}.{key}.bias"] = (torch.rand(n_out, generator=g) * 2 - 1) * bound
    return LocationEncoder.from_geoclip_state_dict(state)


def split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) photo numbers, a seeded random split; both sorted."""
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_out = max(1, int(round(n * holdout)))
    if n - n_out < 2:
        raise TrainingDataError(f"{n} photos leave fewer than 2 to train on after holding out {holdout:.0%}: "
                                "cache more photos")
    return np.sort(order[n_out:]), np.sort(order[:n_out])


class EvalGallery:
    """A set of candidate coordinates, encoded with the model being trained at each evaluation."""

    def __init__(self, name: str, latlng: np.ndarray):
        self.name = name
        self.latlng = np.ascontiguousarray(latlng, dtype=np.float64)

    def predict(self, model: GeoCLIPModel, images: torch.Tensor, device: torch.device, trained: bool) -> np.ndarray:
        """(n, 512) unit image vectors -> (n, 2) lat, lng of the best gallery point each (encoded now,
        so ``trained`` changes nothing here)."""
        best = torch.full((len(images),), -2.0, device=device)
        arg = torch.zeros(len(images), dtype=torch.long, device=device)
        coords = torch.from_numpy(self.latlng).float()
        for start in range(0, len(coords), 16384):
            vectors = model.gps(coords[start : start + 16384].to(device))
            score, idx = (images @ vectors.T).max(dim=1)
            better = score > best
            best = torch.where(better, score, best)
            arg = torch.where(better, idx + start, arg)
        return self.latlng[arg.cpu().numpy()]


class IndexGallery:
    """An index's cells. While the location encoder is the one the index was built with, the index
    answers as it does when served (its FAISS search, re-ranking and all); once training has changed
    the encoder, its cell centres are re-encoded as an exact gallery."""

    def __init__(self, path: Path, base_weights: Path | None, base_sha: str | None, frozen: bool):
        from geoindex.locate.geolocator import Geolocator
        from geoindex.store.cell_table import load_cell_table
        from geoindex.store.manifest import open_index_dir

        self.name = f"index {path}"
        index_dir = open_index_dir(path)
        same = base_sha is not None and index_dir.manifest["encoder"].get("weights_sha256") == base_sha
        self.geo = Geolocator(path, weights=base_weights) if same else None  # it answers as served
        self.frozen = frozen
        table = self.geo.table if self.geo is not None else load_cell_table(index_dir.cells_path)
        self.exact = EvalGallery(self.name, np.column_stack((table.lat, table.lng)))

    def predict(self, model: GeoCLIPModel, images: torch.Tensor, device: torch.device, trained: bool) -> np.ndarray:
        if self.geo is not None and (self.frozen or not trained):
            from geoindex.locate.options import QueryOptions

            results = self.geo.locate(images.cpu().numpy(), QueryOptions(k=1))
            return np.array([[r.predictions[0].lat, r.predictions[0].lng] for r in results])
        return self.exact.predict(model, images, device, trained)


def evaluate(model: GeoCLIPModel, cache: FeatureCache, rows: np.ndarray, galleries: list, device: torch.device,
             trained: bool) -> dict:
    """The accuracy table of ``rows`` (held-out photos, their plain view) against each gallery."""
    model.eval()
    out = {}
    with torch.no_grad():
        images = torch.cat([model.images(torch.from_numpy(cache.take(rows[s : s + 4096])).to(device))
                            for s in range(0, len(rows), 4096)])
        truth = cache.latlng[rows]
        for gallery in galleries:
            pred = gallery.predict(model, images, device, trained)
            out[gallery.name] = accuracy_table(haversine_km(truth[:, 0], truth[:, 1], pred[:, 0], pred[:, 1]))
    model.train()
    return out


def eval_galleries(config: FitConfig, base_sha: str | None) -> list:
    galleries: list = []
    if config.eval_gallery == "100k":
        from geoindex.cells.csv_gallery import read_gallery_csv
        from geoindex.encoders.weights import gallery_100k_path

        galleries.append(EvalGallery("GeoCLIP 100K gallery", read_gallery_csv(gallery_100k_path())))
    elif config.eval_gallery != "none":
        from geoindex.cells.coordinates import read_latlng

        galleries.append(EvalGallery(f"gallery {config.eval_gallery}", read_latlng(config.eval_gallery,
                                                                                  what="--eval-gallery")))
    if config.eval_index is not None:
        galleries.append(IndexGallery(config.eval_index, config.base_weights, base_sha, config.freeze_location))
    return galleries


def _lr_lambda(config: FitConfig, steps_per_epoch: int):
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


def fit(config: FitConfig) -> FitReport:
    """Train (or resume training) and write the weights folder ``config.out``."""
    from tqdm import tqdm

    from geoindex.encoders.location import pick_device

    cache = FeatureCache(config.features)
    out = Path(config.out)
    if (out / WEIGHTS_INFO_FILE).is_file() and not config.overwrite:
        raise TrainingDataError(f"--out {str(out)!r} already holds trained weights: pass --overwrite to train "
                                "again, or another --out")
    if out.exists() and any(out.iterdir()) and not (out / CHECKPOINTS).is_dir() and not (out / WEIGHTS_INFO_FILE).is_file():
        raise TrainingDataError(f"--out {str(out)!r} exists and is not a training folder: give an empty or new folder")
    for other, flag in ((config.base_weights, "--base-weights"), (config.features, "--features")):
        if other is not None and Path(other).resolve() == out.resolve():
            raise TrainingDataError(f"--out {str(out)!r} is also {flag}: write the trained weights to another folder")
    device = pick_device(config.device)
    amp = (device.type == "cuda") if config.amp is None else config.amp
    if amp and device.type != "cuda":
        raise InvalidArgumentError("--amp (fp16 mixed precision) needs CUDA: on the CPU training runs in fp32")
    torch.manual_seed(config.seed)
    model, base_sha, source = initial_model(config, cache.width)
    model = model.to(device).train()
    model.location.requires_grad_(not config.freeze_location)
    model.head.requires_grad_(True)
    model.logit_scale.requires_grad_(True)
    fingerprint = {**config.fingerprint(cache, base_sha), "amp": amp, "device_type": device.type}
    if config.overwrite and out.exists():
        shutil.rmtree(out)  # only now: everything it starts from has loaded
    train_rows, held_rows = split(len(cache), config.holdout, config.seed)
    if len(held_rows) > config.eval_max:
        held_rows = np.sort(np.random.default_rng([config.seed, 11]).choice(held_rows, config.eval_max, replace=False))
    batch = min(config.batch_size, len(train_rows))
    steps_per_epoch = len(train_rows) // batch  # the last partial batch is dropped (a new order each epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    queue = GPSQueue(config.queue_size)
    history: list[dict] = []
    epoch, step_in_epoch, global_step = 0, 0, 0
    losses: list[float] = []  # this epoch's so far (a mid-epoch checkpoint keeps them)
    ckpt = latest_checkpoint(out)
    resumed_from = None
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["fingerprint"] != fingerprint:
            changed = sorted(k for k in {*fingerprint, *state["fingerprint"]}
                             if fingerprint.get(k) != state["fingerprint"].get(k))
            raise TrainingDataError(
                f"{str(out)!r} holds checkpoints of another run ({', '.join(changed)} differ): run the same command "
                "as before to resume it, or pass --overwrite to start again"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        queue.load(state["queue"])
        history = state["history"]
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        losses = list(state.get("epoch_losses", []))
        resumed_from = global_step
        log.info("resuming from %s (epoch %d, step %d)", ckpt.name, epoch + 1, global_step)
    galleries = eval_galleries(config, base_sha)
    if not history and galleries and global_step == 0:  # the baseline: before any step
        history.append({"epoch": 0, "step": 0, **evaluate(model, cache, held_rows, galleries, device, trained=False)})
        _log_eval(history[-1])
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    criterion = nn.CrossEntropyLoss()
    start, steps_run = time.perf_counter(), 0
    total_steps = config.epochs * steps_per_epoch
    with tqdm(total=total_steps, initial=global_step, unit="step", disable=not config.progress, desc="fit") as bar:
        while epoch < config.epochs:
            order = np.random.default_rng([config.seed, epoch]).permutation(train_rows)
            while step_in_epoch < steps_per_epoch:
                if kill_at and global_step == kill_at:
                    os._exit(137)  # as a kill -9 would: nothing flushed, nothing cleaned up
                rng = np.random.default_rng([config.seed, epoch, step_in_epoch])
                rows = order[step_in_epoch * batch : (step_in_epoch + 1) * batch]
                views = rng.integers(0, cache.views, len(rows)) if cache.views > 1 else None
                feats = torch.from_numpy(cache.take(rows, views)).to(device)
                gps = cache.latlng[rows]
                gps_all = np.concatenate([gps, queue.sample(rng, config.queue_noise_km)])
                queue.push(gps)
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    logits = model.logit_scale.exp() * model.images(feats) @ model.gps(
                        torch.from_numpy(gps_all).float().to(device)).T
                    loss = criterion(logits.float(), torch.arange(len(rows), device=device))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingDataError(f"the loss became {value} at step {global_step + 1}: lower --lr "
                                            f"(now {config.lr:g})")
                losses.append(value)
                step_in_epoch += 1
                global_step += 1
                steps_run += 1
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", epoch=epoch + 1)
                if global_step % config.checkpoint_every == 0 and step_in_epoch < steps_per_epoch:
                    save_checkpoint(out, global_step, fingerprint, model, optimizer, schedule, scaler, queue, history,
                                    epoch, step_in_epoch, losses)
            epoch, step_in_epoch = epoch + 1, 0
            record = {"epoch": epoch, "step": global_step,
                      "train_loss": round(float(np.mean(losses)), 5) if losses else None,
                      "logit_scale": round(float(model.logit_scale.detach().exp()), 3)}
            if galleries:
                record.update(evaluate(model, cache, held_rows, galleries, device, trained=True))
            history.append(record)
            losses = []
            _log_eval(record)
            save_checkpoint(out, global_step, fingerprint, model, optimizer, schedule, scaler, queue, history,
                            epoch, step_in_epoch)
    seconds = time.perf_counter() - start
    steps_per_s = steps_run / seconds if seconds > 0 and steps_run else float("nan")
    write_weights(out, model, config, cache, fingerprint, history, source, global_step, seconds, steps_per_s, device)
    return FitReport(out, global_step, seconds, steps_per_s, history, resumed_from, str(device))


def _log_eval(record: dict) -> None:
    for name, table in record.items():
        if isinstance(table, dict):
            log.info("epoch %d, %s: %s", record["epoch"], name,
                     ", ".join(f"{k} {v}" for k, v in table.items() if k != "n"))


def latest_checkpoint(out: Path) -> Path | None:
    folder = out / CHECKPOINTS
    found = sorted(folder.glob("step-*.pt")) if folder.is_dir() else []
    return found[-1] if found else None


def save_checkpoint(out: Path, step: int, fingerprint: dict, model, optimizer, schedule, scaler, queue: GPSQueue,
                    history: list, epoch: int, step_in_epoch: int, epoch_losses: list | None = None) -> Path:
    """Write a whole checkpoint (tmp file renamed into place); keep the newest KEEP_CHECKPOINTS."""
    folder = out / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:09d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "scaler": scaler.state_dict(), "queue": queue.state(),
                "history": history, "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": step,
                "epoch_losses": list(epoch_losses or [])}, tmp)
    os.replace(tmp, path)
    for old in sorted(folder.glob("step-*.pt"))[:-KEEP_CHECKPOINTS]:
        old.unlink()
    return path


def write_weights(out: Path, model: GeoCLIPModel, config: FitConfig, cache: FeatureCache, fingerprint: dict,
                  history: list, source: str, steps: int, seconds: float, steps_per_s: float,
                  device: torch.device) -> None:
    """The weights folder: GeoCLIP's three files, then ``weights.json`` last (it marks the folder complete)."""
    model = model.cpu()
    parts = {
        LOCATION_ENCODER_FILE: model.location.to_geoclip_state_dict(),
        IMAGE_HEAD_FILE: {k: v.detach().float().clone() for k, v in model.head.state_dict().items()},
        LOGIT_SCALE_FILE: model.logit_scale.detach().float().clone(),
    }
    for name, value in parts.items():
        tmp = out / (name + ".tmp")
        torch.save(value, tmp)
        os.replace(tmp, out / name)
    info = {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "clip_model": cache.clip_model,
        "clip_checkpoint": cache.info.get("clip_checkpoint"),  # the backbone weights the features came from
        "width": cache.width,
        "started_from": source,
        "features": {"path": str(Path(config.features).resolve()), "images": len(cache),
                     "fingerprint": cache.fingerprint()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()
                   if k not in ("out", "overwrite", "progress")},
        "fingerprint": fingerprint,
        "steps": steps,
        "seconds_last_run": round(seconds, 3),
        "steps_per_s_last_run": None if math.isnan(steps_per_s) else round(steps_per_s, 3),
        "device": str(device),
        "history": history,
        "files": {name: sha256_file(out / name) for name in parts},
    }
    tmp = out / (WEIGHTS_INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, out / WEIGHTS_INFO_FILE)
