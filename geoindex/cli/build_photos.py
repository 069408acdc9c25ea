"""``geoindex build --photos photos.csv --out REF``: the reference photo gallery's flags and entry
(:mod:`geoindex.photos.build`); the cell build's parser hands over when --photos is given."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from geoindex.cli.common import add_backend, add_clip_model
from geoindex.errors import GeoindexError, InvalidArgumentError, TrainingDataError
from geoindex.pipeline.workdir import work_dir_for

# cell-build flags a photo build does not take (refused when given at all; see given_dests)
CELL_ONLY = ("cells", "country", "bbox", "store", "precision", "batch_size")
PHOTO_ONLY = ("image_root", "clip_model", "clip_checkpoint", "backend")  # a cell build encodes no photo


def given_dests(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations the command line itself set: ``argv`` parsed again with every default
    suppressed, so a flag left out is absent whatever its default is (no copy of the defaults)."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default


def add_photo_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reference photos (with --photos)")
    g.add_argument("--photos-features", type=Path, default=None, metavar="DIR",
                   help="reuse this `geoindex train features` cache of the --photos CSV instead of encoding again")
    g.add_argument("--image-root", type=Path, default=None, help="folder relative image paths start from "
                   "(default: the CSV's)")
    add_clip_model(g)
    add_backend(g)
    g.add_argument("--clip-checkpoint", default=None, help="local checkpoint of the CLIP model (as in locate)")


def _write_error(out, e: Exception):
    """The one line of a full disk (or a path not ours to write) met while building ``out``: the
    build removed its temporary folder; the encoded features in ``.OUT.partial`` are kept."""
    from geoindex.atomic import write_error

    where = getattr(e, "filename2", None) or getattr(e, "filename", None) or out
    return write_error(where, e, f"free space on that disk and run the same command again: the photos encoded so "
                                 f"far are kept in {work_dir_for(Path(out).resolve())} and resumed from")


def build_photos_main(args, prog: str, given: set[str] = frozenset()) -> int:
    """``geoindex build --photos``; ``given``: the flags the command line set (:func:`given_dests`)."""
    from geoindex.index.search import SearchSettings
    from geoindex.photos.build import PhotoBuildConfig, build_photos

    partial = work_dir_for(Path(args.out).resolve())  # the build's work dir
    fresh = not partial.exists()
    try:
        if args.photos is None:
            raise InvalidArgumentError("--photos-features needs --photos CSV: the CSV the cache was made from "
                                       "(image paths and metadata come from it)")
        from geoindex.atomic import check_out_folder

        check_out_folder(args.out)  # before CLIP loads: /proc/x, a missing or read-only folder
        cell_flags = [k for k in CELL_ONLY if k in given]
        if cell_flags:
            raise InvalidArgumentError(f"--{cell_flags[0].replace('_', '-')} is a cell-index flag; a --photos build "
                                       "does not take it (docs/photos.md lists its flags)")
        manifest = build_photos(PhotoBuildConfig(
            csv=args.photos, out=args.out, features=args.photos_features, image_root=args.image_root,
            clip_model=args.clip_model, clip_checkpoint=args.clip_checkpoint, weights=args.weights,
            device=args.device, backend=args.backend, factory=args.factory,
            search=None if args.search is None else SearchSettings.parse(args.search),
            max_memory=args.max_memory, lists_on_disk=args.lists_on_disk, ray=args.ray,
            overwrite=args.overwrite, seed=args.seed, progress=not args.no_progress))
    except GeoindexError as e:
        if isinstance(e, TrainingDataError) and fresh:  # no photo could be used: nothing to resume
            shutil.rmtree(partial, ignore_errors=True)
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 -- a full disk or a forbidden path met mid-build: one line
        error = _write_error(args.out, e)
        if error is None:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; encoded shards are kept in {partial}: run the same "
              "command again to resume", file=sys.stderr)
        return 130
    lists = ", lists on disk" if manifest["index"]["lists"] == "disk" else ""
    print(f"{args.out}: {manifest['photos']} reference photos ({manifest['skipped']} skipped, listed in "
          f"{args.out}/skipped.csv), {manifest['index']['factory']}{lists}, "
          f"{manifest['memory']['resident_bytes']:,} B resident, {manifest['encoder']['clip_model']}")
    return 0
