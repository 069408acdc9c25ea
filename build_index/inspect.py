"""``python -m build_index.inspect DIR [--lookup LAT,LNG ...]``: verify an index and query it.

Prints the manifest summary, verifies every file's checksum, and for each ``--lookup`` point
encodes the location, searches the index and prints the top cells with their metadata: a
location-embedding query end to end (images and text come with the query layer).
"""

from __future__ import annotations

import argparse
import logging
import sys

from geoindex.errors import GeoindexError


def _latlng(text: str) -> tuple[float, float]:
    try:
        lat, lng = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAT,LNG (e.g. 48.8584,2.2945)") from None
    return lat, lng


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build_index.inspect", description=__doc__.splitlines()[0])
    p.add_argument("index_dir")
    p.add_argument("--lookup", type=_latlng, action="append", default=[], metavar="LAT,LNG")
    p.add_argument("-k", type=int, default=5, help="cells to show per lookup")
    args = p.parse_args(argv)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)

    import duckdb
    import faiss
    import numpy as np

    from geoindex.encoders.location import encode_latlng, load_location_encoder, location_weights_sha256
    from geoindex.index.search import apply_search_settings
    from geoindex.store.manifest import open_index_dir

    try:
        idx = open_index_dir(args.index_dir, verify="full", weights_sha256=location_weights_sha256())
        m = idx.manifest
        g, ix = m["gallery"], m["index"]
        print(f"{idx.path}: {g['count']:,} cells ({g.get('resolution', 'csv')} {g.get('cells', '')}), "
              f"{ix['factory']} [{idx.search or 'exact'}], checksums ok")
        print(f"self-check at build: recall@10 {m['self_check']['recall_at_10']:.3f}, "
              f"self-hit@1 {m['self_check']['self_hit_at_1']:.3f} over {m['self_check']['queries']} cells")
        if not args.lookup:
            return 0
        index = faiss.read_index(str(idx.vectors_path))
        apply_search_settings(index, idx.search)
        xq = encode_latlng(load_location_encoder(), np.array(args.lookup))
        D, I = index.search(xq, args.k)
        con = duckdb.connect(str(idx.cells_path), read_only=True)
        for (lat, lng), scores, ids in zip(args.lookup, D, I):
            print(f"\nlookup {lat:.4f}, {lng:.4f}:")
            for score, cell in zip(scores, ids):
                row = con.execute("SELECT lat, lng, country, admin1, place FROM cells WHERE cell = ?",
                                  [int(cell)]).fetchone()
                print(f"  {int(cell):x}  {row[0]:8.3f} {row[1]:9.3f}  score {score:.4f}  "
                      f"{row[2] or '--'} / {row[3] or '--'} / {row[4] or '--'}")
        con.close()
    except GeoindexError as e:
        print(f"inspect: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
