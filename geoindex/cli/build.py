"""``build_index --resolution R --out DIR``: build a geoindex index directory.

Loose input (argv) becomes a typed :class:`geoindex.pipeline.BuildConfig` here (the search string a
:class:`geoindex.index.search.SearchSettings`); errors become one line on stderr and exit status
2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from geoindex.cli.common import add_device, add_weights
from geoindex.errors import GeoindexError, InvalidArgumentError
from geoindex.cli.build_photos import PHOTO_ONLY, add_photo_flags, build_photos_main, given_dests
from geoindex.index.defaults import describe_defaults

PROG = "geoindex build"
EPILOG = """examples:
  geoindex build --resolution 3 --out idx-r3                  # 13K land cells, the measured default
  geoindex build --resolution 3 --factory Flat --out idx-r3   # the same cells, exact search
  geoindex build --resolution 5 --out idx-r5                  # 594K land cells
  geoindex build --resolution 2 --cells all --out idx         # oceans too
  geoindex build --gallery-csv coordinates_100K.csv --out idx-100k
  geoindex build --resolution 5 --factory IVF,PQ64,RFlat --search nprobe=32 --out idx-pq
  geoindex build --resolution 6 --factory IVFH3,PQ64 --search nprobe=16,rerank=32 --out idx-r6-small
  geoindex build --resolution 7 --country FR --out idx-r7-fr  # one country, 114K cells
  geoindex build --resolution 6 --bbox=-10,35,30,60 --cells 831fb4fffffffff --out idx-r6-box
  geoindex build --photos photos.csv --out ref                # reference photos (locate --photos ref)
build_index is the same command under its own name.
"""


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Encode every H3 cell centre (or the rows of a lat,lng CSV) with GeoCLIP's "
        "pretrained location encoder and store the vectors in a FAISS index with DuckDB metadata.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--resolution", "-r", help="H3 resolution 0-9 of the gallery cells")
    src.add_argument("--gallery-csv", type=Path, help="custom gallery: CSV of lat,lng rows")
    src.add_argument("--photos", type=Path, metavar="CSV", help="reference photo gallery (docs/photos.md): CSV of "
                     "image,lat,lng rows, other columns kept as metadata; query it with locate/serve --photos")
    add_photo_flags(p)
    p.add_argument("--out", "-o", type=Path, required=True, help="index directory to create")
    p.add_argument("--cells", action="append", default=[], metavar="land|all|H3",
                   help="land (default: centre or a vertex on land) or all; an H3 cell id (repeatable) builds only "
                        "the cells below it")
    p.add_argument("--country", action="append", default=[], metavar="CC",
                   help="build only the cells in this country (ISO alpha-2, repeatable; a cell is in it when its "
                        "centre lies in its admin-0 polygon or within one cell's radius offshore, as in query filters)")
    p.add_argument("--bbox", action="append", default=[], metavar="W,S,E,N",
                   help="build only the cells whose centre is in this box (repeatable; --bbox=-5,41,10,51 when "
                        "west is negative). Region kinds combine with AND, values with OR")
    p.add_argument("--factory", default="auto", dest="factory", metavar="FACTORY",
                   help="FAISS factory string, or auto (default): the measured default per resolution, "
                        f"{describe_defaults()} (docs: why)")
    # the flag's older name, refused for one release: everywhere else --index is the index folder
    p.add_argument("--index", dest="old_index_flag", default=None, help=argparse.SUPPRESS)
    p.add_argument("--search", default=None,
                   help='search parameters stored as default, e.g. "nprobe=16"; add rerank=R to re-score '
                        'the R best candidates exactly at query time, e.g. "nprobe=16,rerank=32"')
    p.add_argument("--store", default="auto",
                   help="exact vectors on disk for re-ranking: fp16 (1 KB a vector), sq8 (512 B), fp32, none; "
                        "auto (default): fp16 when the search settings re-rank (rerank=R), else none")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="resident budget for the index (30MB, 4GiB): builds the fastest measured configuration "
                        "that fits (it picks --factory and --search) and records the choice in the manifest")
    p.add_argument("--lists-on-disk", action=argparse.BooleanOptionalAction, default=None,
                   help="IVF inverted lists in DIR/lists.ivfdata, memory-mapped by readers instead of loaded "
                        "(default: only when they would take over half of this machine's memory)")
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="build on a Ray cluster: encoder actors per CPU (per GPU when it has GPUs) and codes added "
                        "in parallel (with --photos: the CLIP encoding); with no ADDRESS joins $RAY_ADDRESS or "
                        "starts a local cluster. Same index as without it")
    add_weights(p)
    p.add_argument("--batch-size", type=int, default=8192, help="points per encoder batch")
    add_device(p)
    p.add_argument("--precision", default="fp32", help="fp32 (exact); fp16 or bf16 on CUDA only")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    p.add_argument("--seed", type=int, default=1234, help="seed of the training sample")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--quiet", "-q", action="store_true", help="only warnings and the summary")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    p = parser(prog)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if args.old_index_flag is not None:
        print(f"{prog}: error: --index is not a build flag: give the FAISS factory string as --factory "
              f"{args.old_index_flag} (--index names the index folder in locate, serve and inspect)", file=sys.stderr)
        return 2
    given = given_dests(p, argv)
    if args.photos is not None or args.photos_features is not None:
        return build_photos_main(args, prog, given)
    photo_flags = [k for k in PHOTO_ONLY if k in given]
    if photo_flags:  # silently ignored before: a cell or CSV-point build runs no image tower
        print(f"{prog}: error: --{photo_flags[0].replace('_', '-')} is a --photos flag; a cell or --gallery-csv "
              "build encodes no photo: drop it, or give --photos CSV", file=sys.stderr)
        return 2
    # Heavy imports after argument parsing: --help stays instant.
    from geoindex.pipeline import BuildConfig, build, summary_line, work_dir_for
    from geoindex.cells.region import make_filter
    from geoindex.index.search import SearchSettings

    try:
        import h3

        for value in args.cells:
            if value not in ("land", "all") and not h3.is_valid_cell(value):
                raise InvalidArgumentError(f"--cells {value!r} is not land, all or an H3 cell id: use land (default), "
                                           "all (oceans too), or a cell such as 831fb4fffffffff to build only below it")
        coverage = [c for c in args.cells if c in ("land", "all")]
        if len(set(coverage)) > 1:
            raise InvalidArgumentError("--cells land and --cells all contradict each other: give one")
        config = BuildConfig(
            out=args.out,
            resolution=args.resolution,
            cells=coverage[0] if coverage else "land",
            region=make_filter(args.country, args.bbox, [c for c in args.cells if c not in ("land", "all")]),
            gallery_csv=args.gallery_csv,
            factory=args.factory,
            search=None if args.search is None else SearchSettings.parse(args.search),
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            overwrite=args.overwrite,
            seed=args.seed,
            progress=not args.no_progress,
            store=args.store,
            max_memory=args.max_memory,
            ray=args.ray,
            lists_on_disk=args.lists_on_disk,
            weights=args.weights,
        )
        result = build(config)
    except GeoindexError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished shards are kept in {work_dir_for(args.out.resolve())}: "
              "run the same command again to resume", file=sys.stderr)
        return 130
    print(summary_line(result))
    return 0
