"""How close does a dense gallery get to the truth?

For real photo locations (a seeded sample of GeoCLIP's 100K gallery coordinates), encode each
location and take the top-1 cell of the land gallery at each resolution: its centre's distance
to the true location (median, p90, share within 1 / 25 / 200 / 750 / 2500 km), with exact search
(the cached exact vectors) and with the default approximate index (``--indexes DIR`` holding
``res{R}-land`` from build_index; skipped where absent). Baseline on the same queries: GeoCLIP's
own 100K gallery, leave-one-out (each query is a gallery point, so its own row is excluded).

This isolates the gallery: queries are location embeddings, so errors come from gallery spacing
and aliasing, not from the image encoder. Results: benchmarks/results/fidelity.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from common import ROOT, exact_search_chunked, haversine_km, land_gallery, machine, save, table
from geo_eval import Gallery100K, accuracy_table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=[3, 4, 5])
    p.add_argument("--queries", type=int, default=5000)
    p.add_argument("--indexes", type=Path, default=ROOT / "indexes", help="folder with res{R}-land index dirs")
    p.add_argument("--quick", action="store_true", help="res 3-4 only (~1 min); res 6 adds ~15 min to encode its gallery once")
    args = p.parse_args(argv)
    if args.quick:
        args.resolutions = [3, 4]

    from geoindex import Geolocator, QueryOptions
    from geoindex.encoders.location import encode_latlng, load_location_encoder

    g100k = Gallery100K()
    rows_idx = np.random.default_rng(21).choice(len(g100k.latlng), args.queries, replace=False)
    truth = g100k.latlng[rows_idx]
    xq = encode_latlng(load_location_encoder(), truth)
    rows = []
    pred = g100k.top1_latlng(xq, exclude_rows=rows_idx)
    rows.append({"gallery": "GeoCLIP 100K (leave-one-out)", "search": "exact",
                 **accuracy_table(haversine_km(truth[:, 0], truth[:, 1], pred[:, 0], pred[:, 1]))})
    for res in args.resolutions:
        cells, latlng, xb = land_gallery(res)
        _, I = exact_search_chunked(xq, xb, 1)
        best = latlng[I[:, 0]]
        rows.append({"gallery": f"H3 res {res} land ({len(cells):,})", "search": "exact",
                     **accuracy_table(haversine_km(truth[:, 0], truth[:, 1], best[:, 0], best[:, 1]))})
        index_dir = args.indexes / f"res{res}-land"
        if (index_dir / "manifest.json").exists():
            geo = Geolocator(index_dir)
            res_ = geo.locate(xq, QueryOptions(k=1, candidates=1))
            pred = np.array([[r.predictions[0].lat, r.predictions[0].lng] for r in res_])
            rows.append({"gallery": f"H3 res {res} land ({len(cells):,})", "search": f"{geo.dir.factory} {geo.dir.search}",
                         **accuracy_table(haversine_km(truth[:, 0], truth[:, 1], pred[:, 0], pred[:, 1]))})
        del xb
    print(table(rows, ["gallery", "search", "median_km", "p90_km", "within_1km", "within_25km", "within_200km",
                       "within_750km", "within_2500km"]))
    print(f"saved {save('fidelity.json', {'machine': machine(), 'queries': args.queries, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
