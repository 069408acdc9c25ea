"""``geoindex train features`` then ``geoindex train fit``: GeoCLIP fine-tuned on your photos.

``features`` runs the frozen CLIP image tower once over a CSV of image,lat,lng rows into a
resumable feature cache; ``fit`` trains the image head, the location encoder and the temperature on
it with GeoCLIP's queue-contrastive objective and writes a weights folder for ``--weights``.
Errors are one line on stderr and exit status 2; an interrupted run resumes when run again.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from geoindex.cli.common import add_clip_model, add_device
from geoindex.errors import GeoindexError

PROG = "geoindex train"
EPILOG = """examples:
  geoindex train features --csv photos.csv --out feats/               # CLIP ViT-L/14 features, once
  geoindex train fit --features feats/ --out weights/ --epochs 10     # from GeoCLIP's released weights
  build_index --resolution 6 --weights weights/ --out indexes/mine    # an index of the trained encoder
  geoindex locate --index indexes/mine --weights weights/ photo.jpg
"""


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Fine-tune GeoCLIP on geotagged photos: cache CLIP features, then train.")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("features", help="run the frozen CLIP image tower over image,lat,lng rows, once")
    f.add_argument("--csv", type=Path, required=True, help="CSV with image, lat, lng columns (a header naming them)")
    f.add_argument("--out", "-o", type=Path, required=True, help="feature cache folder to create (or resume)")
    f.add_argument("--image-root", type=Path, default=None, help="folder relative image paths start from "
                   "(default: the CSV's folder)")
    add_clip_model(f, default="ViT-L-14")
    f.add_argument("--clip-checkpoint", default=None, help="local weights of --clip-model: an open_clip/OpenAI "
                   "file or a transformers CLIP folder (else $GEOINDEX_CLIP_CHECKPOINT, open_clip's cache, "
                   "the Hugging Face cache's openai/clip-vit-large-patch14, else open_clip downloads it)")
    f.add_argument("--views", type=int, default=1, help="views per photo: 1 plain + augmented ones (crop, flip, "
                   "colour jitter, greyscale); default 1")
    f.add_argument("--batch-size", type=int, default=64, help="images per CLIP batch (default 64)")
    f.add_argument("--shard-rows", type=int, default=4096, help="photos per resumable shard (default 4096)")
    f.add_argument("--dtype", default="float16", choices=("float16", "float32"), help="feature dtype (default float16)")
    f.add_argument("--workers", type=int, default=4, help="image decoding threads (default 4)")
    f.add_argument("--seed", type=int, default=0, help="seed of the augmented views")
    f.add_argument("--strict", action="store_true", help="fail on the first unreadable image instead of skipping it")
    add_device(f)
    f.add_argument("--overwrite", action="store_true", help="discard a cache in --out and encode again")
    f.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    t = sub.add_parser("fit", help="train the head, location encoder and temperature on a feature cache")
    t.add_argument("--features", type=Path, required=True, help="a folder `geoindex train features` wrote")
    t.add_argument("--out", "-o", type=Path, required=True, help="weights folder to create (or resume)")
    t.add_argument("--epochs", type=int, default=10, help="passes over the feature cache (default 10)")
    t.add_argument("--batch-size", type=int, default=256, help="photos per step (default 256; GeoCLIP used 512)")
    t.add_argument("--lr", type=float, default=3e-5, help="AdamW learning rate (default 3e-5; from scratch try 1e-3)")
    t.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    t.add_argument("--schedule", default="cosine", choices=("cosine", "step", "constant"),
                   help="cosine after --warmup-steps (default), step (x0.87 per epoch), constant")
    t.add_argument("--warmup-steps", type=int, default=100, help="optimizer steps of linear learning-rate warm-up (default 100)")
    t.add_argument("--queue-size", type=int, default=4096, help="GPS queue of recent coordinates (0: none)")
    t.add_argument("--queue-noise-km", type=float, default=1.0, help="Gaussian noise on queued coordinates (km)")
    t.add_argument("--init", default="released", choices=("released", "scratch"),
                   help="start from GeoCLIP's released weights (default) or from random ones")
    t.add_argument("--base-weights", type=Path, default=None, metavar="DIR", help="start from this weights folder")
    t.add_argument("--new-head", action="store_true", help="a fresh image head (a backbone of another width)")
    t.add_argument("--freeze-location", action="store_true", help="train the image head and temperature only")
    t.add_argument("--holdout", type=float, default=0.1, help="share of photos held out for evaluation")
    t.add_argument("--eval-max", type=int, default=5000, help="held-out photos evaluated per epoch")
    t.add_argument("--eval-gallery", default="100k", help="100k (GeoCLIP's gallery), none, or a lat,lng CSV/Parquet")
    t.add_argument("--eval-index", type=Path, default=None, help="also evaluate against this index's cells")
    t.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    t.add_argument("--seed", type=int, default=0, help="seed of the shuffling and initialisation (default 0)")
    add_device(t)
    t.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="fp16 mixed precision (default: on CUDA; refused on the CPU)")
    t.add_argument("--overwrite", action="store_true", help="discard a run in --out and train again")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("geoindex").setLevel(logging.INFO)  # resume notes and each epoch's held-out accuracy
    logging.getLogger("geoindex.encoders.torchvision_compat").setLevel(logging.WARNING)
    try:
        if args.command == "features":
            return _features(args, prog)
        return _fit(args, prog)
    except GeoindexError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # --out (or a file under it) cannot be written: one line, not a traceback
        print(f"{prog}: error: {_os_error(e, getattr(args, 'out', None))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume from {args.out}", file=sys.stderr)
        return 130


def _os_error(e: OSError, out: Path) -> str:
    """One line for a write that failed: the file, why, and what to do."""
    import errno

    where = e.filename or out
    if e.errno == errno.ENOSPC:
        fix = "free some space on that disk or give --out on another, then run the same command to resume"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"give --out a folder this user may write, or fix the permissions of {str(out)!r}"
    else:
        fix = f"check --out {str(out)!r} (an existing folder's path, on a writable disk)"
    return f"cannot write {str(where)!r} ({e.strerror or e}): {fix}"


def _features(args, prog: str) -> int:
    from geoindex.atomic import check_out_folder
    from geoindex.errors import TrainingDataError
    from geoindex.pipeline.image_features import cache_features

    check_out_folder(args.out)  # before CLIP loads; missing parents are not created
    created = not Path(args.out).exists()
    try:
        r = cache_features(args.csv, args.out, clip_model=args.clip_model, clip_checkpoint=args.clip_checkpoint,
                           image_root=args.image_root, device=args.device, batch_size=args.batch_size,
                           views=args.views, seed=args.seed, shard_rows=args.shard_rows, dtype=args.dtype,
                           overwrite=args.overwrite, strict=args.strict, workers=args.workers,
                           progress=not args.no_progress)
    except TrainingDataError:  # no photo could be used: nothing worth resuming, leave no folder we made
        if created:
            import shutil

            shutil.rmtree(args.out, ignore_errors=True)
        raise
    rate = f" ({r.images_per_s:,.1f} images/s on {r.device})" if r.encoded_now else " (all cached already)"
    print(f"{prog}: {r.images:,} photos x {r.views} view(s) -> {r.out} in {r.seconds:.1f} s{rate}; "
          f"{r.skipped} skipped" + (f" (listed in {r.out / 'skipped.csv'})" if r.skipped else ""))
    return 0


def _fit(args, prog: str) -> int:
    from geoindex.train.fit import FitConfig, fit

    config = FitConfig(features=args.features, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
                       warmup_steps=args.warmup_steps, queue_size=args.queue_size,
                       queue_noise_km=args.queue_noise_km, init=args.init, base_weights=args.base_weights,
                       new_head=args.new_head, freeze_location=args.freeze_location, holdout=args.holdout,
                       eval_max=args.eval_max, eval_gallery=args.eval_gallery, eval_index=args.eval_index,
                       checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device, amp=args.amp,
                       overwrite=args.overwrite, progress=not args.no_progress)
    r = fit(config)
    last = r.history[-1] if r.history else {}
    tables = [(k, v) for k, v in last.items() if isinstance(v, dict)]
    summary = "; ".join(f"{name}: median {t['median_km']:,} km, {t['within_25km']}% within 25 km" for name, t in tables)
    rate = f"{r.steps_per_s:.2f} steps/s" if r.steps_per_s == r.steps_per_s else "no steps left"
    print(f"{prog}: {r.steps:,} steps -> {r.out} ({rate})" + (f"; held out: {summary}" if summary else "")
          + f". Use it: geoindex build --weights {r.out} ...; geoindex locate --weights {r.out} ...")
    return 0
