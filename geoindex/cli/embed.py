"""``geoindex embed IN -o OUT``: GeoCLIP location embeddings of a file of coordinates.

IN is a CSV or Parquet of lat, lng rows; OUT's suffix picks ``.npy`` ((n, 512) float32) or
``.parquet`` (lat, lng, embedding). Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from geoindex.cli.common import add_device, add_weights
from geoindex.errors import GeoindexError

PROG = "geoindex embed"
EPILOG = """examples:
  geoindex embed points.csv -o points.npy               # (n, 512) float32, L2-normalised
  geoindex embed sites.parquet -o sites-emb.parquet     # lat, lng, embedding columns
"""


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Encode lat, lng rows with GeoCLIP's pretrained location encoder: 512-d "
                                            "L2-normalised float32 vectors, one per row, in input order.")
    p.add_argument("input", type=Path, metavar="IN", help="CSV or Parquet with lat and lng/lon columns (CSV: or no header)")
    p.add_argument("--out", "-o", type=Path, required=True, help="OUT.npy or OUT.parquet")
    p.add_argument("--batch-size", type=int, default=8192, help="points per encoder batch (default 8192)")
    add_device(p)
    add_weights(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from geoindex.atomic import Terminated, sigterm_unwinds
    from geoindex.encoders.location_files import embed_file

    try:
        with sigterm_unwinds():  # SIGTERM removes the partial output too, as Ctrl-C does
            report = embed_file(args.input, args.out, device=args.device, batch_size=args.batch_size,
                                overwrite=args.overwrite, progress=not args.no_progress, weights=args.weights)
    except GeoindexError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    print(f"{prog}: {report.points:,} points -> {report.out} in {report.seconds:.1f} s "
          f"({report.points_per_s:,.0f} points/s on {report.device})")
    return 0
