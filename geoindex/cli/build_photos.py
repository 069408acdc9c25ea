"""``geoindex build --photos photos.csv --out REF``: the reference photo gallery's flags and entry
(:mod:`geoindex.photos.build`); the cell build's parser hands over when --photos is given."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geoindex.errors import GeoindexError, InvalidArgumentError

# cell-build flags a photo build does not take (refused when given at all; see given_dests)
CELL_ONLY = ("cells", "country", "bbox", "store", "precision", "batch_size")


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
    g.add_argument("--clip-model", default=None, help="CLIP backbone as in locate (default ViT-L-14, or the one "
                   "--weights was trained on; tiny-test for tests)")
    g.add_argument("--clip-checkpoint", default=None, help="local checkpoint of the CLIP model (as in locate)")


def build_photos_main(args, prog: str, given: set[str] = frozenset()) -> int:
    """``geoindex build --photos``; ``given``: the flags the command line set (:func:`given_dests`)."""
    from geoindex.index.search import SearchSettings
    from geoindex.photos.build import PhotoBuildConfig, build_photos

    try:
        if args.photos is None:
            raise InvalidArgumentError("--photos-features needs --photos CSV: the CSV the cache was made from "
                                       "(image paths and metadata come from it)")
        cell_flags = [k for k in CELL_ONLY if k in given]
        if cell_flags:
            raise InvalidArgumentError(f"--{cell_flags[0].replace('_', '-')} is a cell-index flag; a --photos build "
                                       "does not take it (docs/photos.md lists its flags)")
        manifest = build_photos(PhotoBuildConfig(
            csv=args.photos, out=args.out, features=args.photos_features, image_root=args.image_root,
            clip_model=args.clip_model, clip_checkpoint=args.clip_checkpoint, weights=args.weights,
            device=args.device, factory=args.factory,
            search=None if args.search is None else SearchSettings.parse(args.search),
            max_memory=args.max_memory, lists_on_disk=args.lists_on_disk, ray=args.ray,
            overwrite=args.overwrite, seed=args.seed, progress=not args.no_progress))
    except GeoindexError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; encoded shards are kept in {Path(args.out).resolve()}.partial: run the same "
              "command again to resume", file=sys.stderr)
        return 130
    lists = ", lists on disk" if manifest["index"]["lists"] == "disk" else ""
    print(f"{args.out}: {manifest['photos']} reference photos ({manifest['skipped']} skipped, listed in "
          f"{args.out}/skipped.csv), {manifest['index']['factory']}{lists}, "
          f"{manifest['memory']['resident_bytes']:,} B resident, {manifest['encoder']['clip_model']}")
    return 0
