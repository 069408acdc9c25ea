"""``python -m build_index.inspect DIR [--lookup LAT,LNG ...]``: verify an index and query it.

Prints the manifest summary, verifies every file's checksum, and for each ``--lookup`` point
encodes the location and locates it as a query would (the index's search settings, re-ranking
included), printing the top cells with their metadata and their distance from the point: a
location-embedding query end to end (images and text come with the query layer).
"""

from __future__ import annotations

import argparse
import logging
import sys

from geoindex.errors import GeoindexError


PROG = "geoindex inspect"

def _latlng(text: str) -> tuple[float, float]:
    try:
        lat, lng = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAT,LNG (e.g. 48.8584,2.2945)") from None
    return lat, lng


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("index_dir")
    p.add_argument("--lookup", type=_latlng, action="append", default=[], metavar="LAT,LNG")
    p.add_argument("-k", type=int, default=5, help="cells to show per lookup")
    p.add_argument("--weights", default=None, metavar="DIR", help="the GeoCLIP weights folder it was built with")
    args = p.parse_args(argv)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)

    import numpy as np

    from geoindex.cells.countries import LABEL_VERSION
    from geoindex.cells.geocode import haversine_km, reverse_geocode
    from geoindex.cells.region import describe_region, region_from_dict
    from geoindex.encoders.location import encode_latlng, location_weights_sha256
    from geoindex.locate.geolocator import Geolocator
    from geoindex.locate.options import QueryOptions
    from geoindex.store.manifest import open_index_dir

    try:
        idx = open_index_dir(args.index_dir, verify="full", weights_sha256=location_weights_sha256(args.weights))
        m = idx.manifest
        g, ix = m["gallery"], m["index"]
        print(f"{idx.path}: {g['count']:,} cells (res {g.get('resolution', 'csv')} {g.get('cells', '')}), "
              f"{ix['factory']} [{str(idx.search) or 'exact'}], checksums ok")
        print(f"self-check at build: recall@10 {m['self_check']['recall_at_10']:.3f}, "
              f"self-hit@1 {m['self_check']['self_hit_at_1']:.3f} over {m['self_check']['queries']} cells")
        print(f"labels: version {(m.get('labels') or {}).get('version', 1)}"
              + ("" if (m.get("labels") or {}).get("version", 1) >= LABEL_VERSION else
                 f" (older than {LABEL_VERSION}: rebuild to update its --country filters)"))
        if region := g.get("region"):
            print(f"region: {describe_region(region_from_dict(region))} (a regional build)")
        if not args.lookup:
            return 0
        geo = Geolocator(idx.path, weights=args.weights)
        latlng = np.array(args.lookup)
        xq = encode_latlng(geo.encoder_reranker.model, latlng)
        results = geo.locate(xq, QueryOptions(k=min(args.k, geo.ntotal)))
        for (lat, lng), result in zip(args.lookup, results):
            own = reverse_geocode([lat], [lng])
            print(f"\nlookup {lat:.4f}, {lng:.4f}: {_label(own.country[0], own.admin1[0], own.place[0], own.place_km[0])}")
            if note := geo.outside_note(lat, lng):
                print(f"  note: {note}")
            for p in result.predictions:
                km = haversine_km(lat, lng, p.lat, p.lng)
                print(f"  {p.cell:x}  {p.lat:8.3f} {p.lng:9.3f}  {km:8,.1f} km away  score {p.score:.4f}  "
                      f"{_label(p.country, p.admin1, p.place, p.place_km)}")
    except GeoindexError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


def _label(country, admin1, place, place_km) -> str:
    """``FR / Île-de-France / Paris (3.1 km)``: a point's labels (docs/querying.md)."""
    km = "" if place is None or place_km is None or place_km != place_km else f" ({place_km:,.1f} km)"
    return f"{country or '--'} / {admin1 or '--'} / {place or '--'}{km}"


if __name__ == "__main__":
    sys.exit(main())
