"""``geolocate DIR|FILE... --out results.parquet``: the archive mode of ``geoindex locate``.

The flags and the glue from them to :func:`geoindex.archive.runner.run_archive`; the machinery is
in :mod:`geoindex.archive`. Prints a JSON summary on stdout; a one-line error and exit 2 for bad
input (before any work), 130 after Ctrl-C (what was done is saved).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from geoindex.errors import InvalidArgumentError

SETTINGS_VERSION = 2  # 2: the columns of issue 34 (facts, radius_km, run_id): older parts cannot join them


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("photo archives (--out)", "positional arguments may also be folders, walked recursively")
    g.add_argument("--out", "-o", type=Path, default=None, metavar="FILE",
                   help="write one row per photo to FILE (.parquet, .csv, .jsonl or .geojson); resumable: run the "
                        "same command again to continue or to add new photos")
    g.add_argument("--from-list", type=Path, default=None, metavar="FILE", help="photo paths, one a line")
    g.add_argument("--exif", choices=("compare", "trust"), default="compare",
                   help="compare (default): locate every photo, report its EXIF GPS beside; trust: report the EXIF "
                        "position of photos that have one and skip the model for them")
    g.add_argument("--strict", action="store_true", help="stop at the first photo that cannot be located")
    g.add_argument("--restart", action="store_true", help="discard the saved progress of --out and start over")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (or --map) file that geoindex did not write (refused otherwise)")
    g.add_argument("--batch-size", type=int, default=32, help="photos per CLIP batch (default 32)")
    g.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding threads")
    g.add_argument("--commit-every", type=int, default=256, metavar="N",
                   help="save rows every N photos (and every 30 s): what a killed run can lose (default 256)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    g.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="locate on a Ray cluster: actors decode, encode and search shards of --commit-every photos, "
                        "this process writes the rows (default: off; no ADDRESS: $RAY_ADDRESS, else a local cluster)")


def wanted(args) -> bool:
    return args.out is not None or args.from_list is not None or args.ray is not None


def _settings(args, options) -> dict:
    """What makes rows of two runs the same kind of row (saved beside the parts)."""
    manifest = Path(args.index) / "manifest.json"
    try:
        created = json.loads(manifest.read_text()).get("created")
    except (OSError, ValueError):
        created = None
    region = options.region
    return {"version": SETTINGS_VERSION, "index": os.path.abspath(args.index), "index_created": created,
            "clip_model": args.clip_model, "clip_checkpoint": args.clip_checkpoint, "weights": None if args.weights is None else os.path.abspath(args.weights),
            "top_k": options.k, "candidates": options.candidates, "search": str(options.search),
            "aggregate_res": options.aggregate_res, "confidence": options.confidence, "exif": args.exif,
            "region": repr((region.countries, region.bboxes, region.cells)),
            **({"precision": "int8"} if args.precision == "int8" else {})}  # fp32 and fp16 rows may mix


def _check(args) -> None:
    if args.out is None:
        flag = "--from-list" if args.from_list is not None else "--ray"
        raise InvalidArgumentError(f"{flag} needs --out FILE (.parquet, .csv, .jsonl or .geojson): it writes a results "
                                   "table of photos")
    if not args.images and args.from_list is None:
        raise InvalidArgumentError("--out needs photos: give folders or photo files, or --from-list FILE")
    others = [flag for flag, given in (("--text", args.text), ("--embedding", args.embedding), ("--map", args.map),
                                       ("--true", args.true), ("--format", args.format != "table")) if given]
    if others:
        raise InvalidArgumentError(f"--out writes a results table of photos; {', '.join(others)} belong to the printed "
                                   "answer: leave them out, or leave out --out")
    if args.photos is not None:
        raise InvalidArgumentError("--photos with --out: the results table has no neighbour columns yet; run the archive "
                                   "without --photos, or locate photos with --photos and a printed answer (--format json)")
    if min(args.batch_size, args.workers, args.commit_every) < 1:
        raise InvalidArgumentError(f"--batch-size {args.batch_size}, --workers {args.workers} and --commit-every "
                                   f"{args.commit_every} must each be at least 1")


def _absolute(args) -> argparse.Namespace:
    """A copy of ``args`` with every path that names a file or folder here made absolute."""
    def here(value):
        return value if value is None or not os.path.exists(value) else type(value)(os.path.abspath(value))

    return argparse.Namespace(**{**vars(args), "index": here(args.index), "weights": here(args.weights),
                                 "clip_checkpoint": here(args.clip_checkpoint), "from_list": here(args.from_list),
                                 "int8_probe": here(args.int8_probe), "images": [here(p) for p in args.images]})


def run(args, options, prog: str) -> int:
    """The archive run for parsed ``args`` and built QueryOptions; GeoindexError propagates."""
    from geoindex.archive.runner import ArchiveConfig, run_archive

    _check(args)
    config = ArchiveConfig(out=args.out, inputs=[Path(p) for p in args.images], from_list=args.from_list,
                           exif=args.exif, strict=args.strict, restart=args.restart, overwrite=args.overwrite,
                           batch_size=args.batch_size,
                           workers=args.workers, max_pixels=args.max_pixels, commit_rows=args.commit_every,
                           progress=not args.no_progress and sys.stderr.isatty())

    opened = {}
    there = args if args.ray is None else _absolute(args)  # Ray actors call these in other working folders

    def open_geolocator():
        from geoindex.locate.geolocator import Geolocator

        opened["geolocator"] = Geolocator(there.index, weights=there.weights)
        return opened["geolocator"]

    def load_encoder():
        from geoindex.archive.walk import find_photos
        from geoindex.cli.locate import guard_int8
        from geoindex.encoders.clip import load_image_encoder

        encoder = load_image_encoder(there.clip_model, there.clip_checkpoint, there.device, batch_size=there.batch_size,
                                     weights=there.weights, backend=there.backend, precision=there.precision)
        guard_int8(there, encoder, opened.get("geolocator") or open_geolocator(),
                   lambda: find_photos(there.images, there.from_list))
        return encoder

    located = None
    if args.ray is not None:  # joins the cluster now: an address that cannot be reached is refused before any work
        from geoindex.archive.distributed import located_on_ray

        located = located_on_ray(config, open_geolocator, load_encoder, options, args.ray, args.device)
    summary = run_archive(config, _settings(args, options), open_geolocator, load_encoder, options, located)
    print(json.dumps(summary.to_dict()))
    if summary.interrupted:
        print(f"{prog}: stopped: {summary.photos:,} photos saved in {summary.out}; run the same command to continue",
              file=sys.stderr)
        return 130
    print(f"{prog}: {summary.photos:,} photos in {summary.out} ({summary.new:,} new, {summary.errors:,} with an "
          f"error, {summary.from_exif:,} from EXIF) in {summary.seconds:,.1f} s", file=sys.stderr)
    return 0
