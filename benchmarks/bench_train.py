"""Training cost and the queue's effect: geoindex-train measured on synthetic photos.

Three parts, side by side in one run (results: benchmarks/results/train.json):

* ``features``: photos/s of the feature cache (decode, preprocess, CLIP image tower), with the tiny
  random CLIP (64 px, the tests' model) at 1 and 3 views, and with ViT-L/14's architecture on random
  weights (224 px: GeoCLIP's backbone compute, meaningless output; its real weights are not here).
* ``steps``: training steps/s at GeoCLIP's settings (batch 256 and 512, queue 4,096), training the
  location encoder or only the head; each row the median step time over the measured steps.
* ``queue``: held-out accuracy on the synthetic task (:mod:`geoindex.train.synthetic`) after the
  same number of steps with queues of 0 (the batch alone), 256, 1,024 and 4,096 coordinates.

CUDA is used when torch sees it (and then fp16 autocast), else the CPU in fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import RESULTS, machine, save, table

from geoindex.pipeline.image_features import cache_features
from geoindex.train.fit import FitConfig, fit
from geoindex.train.synthetic import write_grid, write_photos


def bench_features(work: Path, device: str) -> list[dict]:
    rows = []
    small = write_photos(work / "p64", 512, size=64)
    big = write_photos(work / "p224", 48, size=224)
    for label, csv, model, views in (("tiny-test, 1 view", small, "tiny-test", 1),
                                     ("tiny-test, 3 views", small, "tiny-test", 3),
                                     ("ViT-L-14 (random weights), 1 view", big, "ViT-L-14-random", 1)):
        out = work / f"f-{model}-{views}"
        r = cache_features(csv, out, clip_model=model, device=device, views=views, batch_size=16 if "L-14" in model
                           else 64, progress=False, overwrite=True)
        rows.append({"model": label, "photos": r.images, "views": views, "seconds": round(r.seconds, 2),
                     "photos_per_s": round(r.images_per_s, 1), "views_per_s": round(r.images_per_s * views, 1),
                     "device": r.device})
        print(table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def bench_steps(work: Path, device: str, steps: int) -> list[dict]:
    import torch

    rows = []
    csv = write_photos(work / "steps", 512 * steps + 600, seed=1)
    feats = work / "steps-f"
    cache_features(csv, feats, clip_model="tiny-test", device=device, progress=False, overwrite=True)
    for batch, freeze in ((256, False), (256, True), (512, False)):
        times = []
        real_step = torch.optim.AdamW.step

        def timed_step(self, *a, **kw):  # the time between two optimiser steps is one whole training step
            out = real_step(self, *a, **kw)
            times.append(time.perf_counter())
            return out

        torch.optim.AdamW.step = timed_step
        try:
            cfg = FitConfig(features=feats, out=work / f"w-{batch}-{freeze}", epochs=1, batch_size=batch,
                            queue_size=4096, freeze_location=freeze, eval_gallery="none", device=device,
                            progress=False, overwrite=True, holdout=0.05, checkpoint_every=10**6)
            r = fit(cfg)
        finally:
            torch.optim.AdamW.step = real_step
        gaps = [b - a for a, b in zip(times, times[1:])][1:]  # the first two steps warm the allocator
        median = statistics.median(gaps)
        rows.append({"batch": batch, "queue": 4096, "trained": "head" if freeze else "head + location encoder",
                     "steps_timed": len(gaps), "median_step_s": round(median, 3),
                     "steps_per_s": round(1 / median, 3), "photos_per_s": round(batch / median, 1),
                     "device": r.device})
        print(table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def bench_queue(work: Path, device: str, photos: int, epochs: int) -> list[dict]:
    rows = []
    csv = write_photos(work / "queue", photos, seed=2)
    grid = write_grid(work / "grid.csv")
    feats = work / "queue-f"
    cache_features(csv, feats, clip_model="tiny-test", device=device, progress=False, overwrite=True)
    for queue in (0, 256, 1024, 4096):
        cfg = FitConfig(features=feats, out=work / f"q{queue}", epochs=epochs, batch_size=32, lr=1e-3,
                        warmup_steps=20, queue_size=queue, holdout=0.2, eval_gallery=str(grid), device=device,
                        progress=False, overwrite=True, checkpoint_every=10**6)
        t = time.perf_counter()
        r = fit(cfg)
        acc = r.history[-1][f"gallery {grid}"]
        rows.append({"queue": queue, "steps": r.steps, "seconds": round(time.perf_counter() - t, 1),
                     **{k: acc[k] for k in ("within_200km", "within_750km", "within_2500km", "median_km", "n")},
                     "untrained_median_km": r.history[0][f"gallery {grid}"]["median_km"]})
        print(table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("parts", nargs="*", default=["features", "steps", "queue"], help="features, steps, queue")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=6, help="steps per row of the steps part (default 6)")
    p.add_argument("--queue-photos", type=int, default=2000)
    p.add_argument("--queue-epochs", type=int, default=4)
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default a temporary one)")
    args = p.parse_args(argv)
    old = RESULTS / "train.json"
    results = json.loads(old.read_text()) if old.is_file() else {}  # a part run alone keeps the others
    results["machine"] = machine()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        if "features" in args.parts:
            results["features"] = bench_features(work, args.device)
        if "steps" in args.parts:
            results["steps"] = bench_steps(work, args.device, args.steps)
        if "queue" in args.parts:
            results["queue"] = bench_queue(work, args.device, args.queue_photos, args.queue_epochs)
    for part in ("features", "steps", "queue"):
        if part in results:
            print(f"\n{part}\n" + table(results[part], list(results[part][0])))
    print(f"saved {save('train.json', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
