"""``geoindex build --photos photos.csv --out REF``: the reference photo gallery's flags and entry
(:mod:`geoindex.photos.build`); the cell build's parser hands over when --photos is given."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from geoindex.cli.common import add_clip_model
from geoindex.errors import GeoindexError, InvalidArgumentError

# cell-build flags a photo build does not take (their defaults, to tell "given" from "left out")
_CELL_ONLY = {"cells": [], "country": [], "bbox": [], "store": "auto", "precision": "fp32", "batch_size": 8192}


def add_photo_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reference photos (with --photos)")
    g.add_argument("--photos-features", type=Path, default=None, metavar="DIR",
                   help="reuse this `geoindex train features` cache of the --photos CSV instead of encoding again")
    g.add_argument("--image-root", type=Path, default=None, help="folder relative image paths start from "
                   "(default: the CSV's)")
    add_clip_model(g)
    g.add_argument("--clip-checkpoint", default=None, help="local checkpoint of the CLIP model (as in locate)")


def build_photos_main(args, prog: str) -> int:
    from geoindex.index.search import SearchSettings
    from geoindex.photos.build import PhotoBuildConfig, build_photos

    try:
        if args.photos is None:
            raise InvalidArgumentError("--photos-features needs --photos CSV: the CSV the cache was made from "
                                       "(image paths and metadata come from it)")
        given = [k for k, default in _CELL_ONLY.items() if getattr(args, k) != default]
        if given:
            raise InvalidArgumentError(f"--{given[0].replace('_', '-')} is a cell-index flag; a --photos build "
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
