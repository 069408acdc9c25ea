"""``geoindex inspect DIR [--lookup LAT,LNG ...]``: verify an index and query it.

Prints the manifest summary, verifies every file's checksum, and for each ``--lookup`` point
encodes the location and locates it as a query would (the index's search settings, re-ranking
included), printing the top cells with their metadata and their distance from the point: a
location-embedding query end to end (images and text come with the query layer).

DIR may be a cell index or a reference photo gallery (``geoindex build --photos``): the manifest's
format says which, the first line of the output names it, and a damaged gallery's fix is a photo
build from its own manifest. A lookup in a gallery lists the photos nearest the point's location
embedding.
"""

from __future__ import annotations

import argparse
import logging
import sys

from geoindex.cli.common import add_weights
from geoindex.errors import GeoindexError


PROG = "geoindex inspect"
DESCRIPTION = ("Verify an index: print its manifest summary and check every file's checksum; with --lookup, "
               "locate points as a query would and print the top cells with their distance from the point.")
EPILOG = """examples:
  geoindex inspect idx-r5
  geoindex inspect idx-r5 --lookup=48.8584,2.2945 --lookup=-33.8568,151.2153 -k 3
"""

def _latlng(text: str) -> tuple[float, float]:
    try:
        lat, lng = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAT,LNG (e.g. 48.8584,2.2945)") from None
    return lat, lng


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index_dir", help="index directory (from geoindex build)")
    p.add_argument("--lookup", type=_latlng, action="append", default=[], metavar="LAT,LNG",
                   help="a point in degrees to locate as a query would, e.g. 48.8584,2.2945 (repeatable)")
    p.add_argument("-k", type=int, default=5, help="cells to show per lookup (default 5)")
    add_weights(p)
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
        if _kind(args.index_dir) == "photos":
            return _inspect_photos(args)
        idx = open_index_dir(args.index_dir, verify="full", weights_sha256=location_weights_sha256(args.weights))
        m = idx.manifest
        g, ix = m["gallery"], m["index"]
        print(f"{idx.path}: cell index, {g['count']:,} cells (res {g.get('resolution', 'csv')} {g.get('cells', '')}), "
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


def _kind(path: str) -> str:
    """"photos" when ``path``'s manifest is a reference gallery's, else "cells" (whose opening says
    what is wrong with a missing or unreadable manifest)."""
    import json
    from pathlib import Path

    from geoindex.photos.layout import FORMAT

    try:
        manifest = json.loads((Path(path) / "manifest.json").read_text())
    except (OSError, ValueError):
        return "cells"
    return "photos" if isinstance(manifest, dict) and manifest.get("format") == FORMAT else "cells"


def _inspect_photos(args) -> int:
    """A reference photo gallery: every checksum, the structure, and lookups as nearest photos."""
    import numpy as np

    from geoindex.cells.geocode import haversine_km
    from geoindex.encoders.location import encode_latlng, load_location_encoder
    from geoindex.photos.gallery import PhotoGallery

    gallery = PhotoGallery(args.index_dir, verify="full")
    m = gallery.manifest
    lists = ", lists on disk" if m["index"].get("lists") == "disk" else ""
    print(f"{gallery.path}: reference photo gallery, {m['photos']:,} photos ({m['skipped']:,} skipped), "
          f"{m['index']['factory']} [{m['index'].get('search') or 'exact'}]{lists}, CLIP {m['encoder']['clip_model']}, "
          "checksums ok")
    print(f"built from {m['csv']['path']}")
    if args.lookup:
        model = load_location_encoder(weights=args.weights)
        xq = encode_latlng(model, np.array(args.lookup))
        D, I = gallery.search(xq, min(args.k, len(gallery)))
        for (lat, lng), d, ids in zip(args.lookup, D, I):
            print(f"\nlookup {lat:.4f}, {lng:.4f}:")
            for r, score in zip(gallery.records(ids), d):
                km = haversine_km(lat, lng, r.lat, r.lng)
                print(f"  photo {r.id}  {r.lat:8.3f} {r.lng:9.3f}  {km:8,.1f} km away  score {score:.4f}  {r.image}")
    return 0


def _label(country, admin1, place, place_km) -> str:
    """``FR / Île-de-France / Paris (3.1 km)``: a point's labels (docs/querying.md)."""
    km = "" if place is None or place_km is None or place_km != place_km else f" ({place_km:,.1f} km)"
    return f"{country or '--'} / {admin1 or '--'} / {place or '--'}{km}"


if __name__ == "__main__":
    sys.exit(main())
