"""Refinement below the grid: how close to the true place, and at what cost per query?

Queries: real photo locations (a seeded sample of GeoCLIP's 100K gallery coordinates), as exact
location embeddings and as "noisy" ones (each moved to cosine 0.5 from itself: image-like spread,
as in bench_recall). For each default index ``indexes/res{R}-land`` (build_index --resolution R):
the grid's top-1 against refined top-1s, for each refinement method (geoindex.locate.refine) and
numbers of starts M. Distances: median / p90 / p99 km and the shares within 1 and 25 km. Cost: ms
a query batched (all queries in one locate call, so they share encoder passes) and one query
alone (median of single calls), CPU threads as torch sets them, or CUDA when torch sees one; and
the encoder points evaluated per query (counted, not timed).

Side by side in one run; results: benchmarks/results/refine.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import ROOT, haversine_km, machine, noisy, photo_locations, save, single_query_ms, table

VARIANTS = [  # (label, method settings, starts M)
    ("descent L2", {"method": "descent", "levels": 2}, 1),
    ("descent L3", {"method": "descent", "levels": 3}, 1),
    ("descent L4", {"method": "descent", "levels": 4}, 1),
    ("descent L3, all branches", {"method": "descent", "levels": 3, "hold_coarse": False}, 1),
    ("descent L3, M=4", {"method": "descent", "levels": 3}, 4),
    ("newton T2", {"method": "newton", "iterations": 2}, 1),
    ("newton T3", {"method": "newton", "iterations": 3}, 1),
    ("adam 10", {"method": "adam", "iterations": 10}, 1),
]


def distances(geo, xq, truth, options) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    results = geo.locate(xq, options)
    elapsed = time.perf_counter() - t
    top = np.array([[r.predictions[0].lat, r.predictions[0].lng] for r in results])
    return haversine_km(truth[:, 0], truth[:, 1], top[:, 0], top[:, 1]), elapsed


def single_p50(geo, xq, options, n: int) -> float:
    return round(float(np.median(single_query_ms(lambda q: geo.locate(q, options), xq, n))), 3)


def summary(d: np.ndarray) -> dict:
    return {"median_km": round(float(np.median(d)), 3), "p90_km": round(float(np.percentile(d, 90)), 3),
            "p99_km": round(float(np.percentile(d, 99)), 3), "within_1km": round(float((d <= 1).mean()), 4),
            "within_25km": round(float((d <= 25).mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=[4, 5, 6])
    p.add_argument("--queries", type=int, default=5000, help="for the grid and the default refinement")
    p.add_argument("--variant-queries", type=int, default=1000, help="for the other methods and M")
    p.add_argument("--single", type=int, default=50, help="queries timed one at a time")
    p.add_argument("--indexes", type=Path, default=ROOT / "indexes")
    args = p.parse_args(argv)

    from geoindex import Geolocator, QueryOptions
    from geoindex.encoders.location import encode_latlng
    from geoindex.locate.refine import Refiner, RefineSettings

    truth = photo_locations(args.queries, seed=12)
    rows = []
    for res in args.resolutions:
        index_dir = args.indexes / f"res{res}-land"
        if not (index_dir / "manifest.json").exists():
            print(f"skipping res {res}: no index at {index_dir} (build_index --resolution {res} --out {index_dir})")
            continue
        geo = Geolocator(index_dir)
        model = geo.reranker.model
        clean = encode_latlng(model, truth)
        for kind, xq in (("exact", clean), ("noisy 0.5", noisy(clean, 0.5))):
            grid = QueryOptions(k=1)
            d, elapsed = distances(geo, xq, truth, grid)
            base = {"res": res, "index": f"{geo.dir.factory} {geo.dir.search}", "queries_kind": kind}
            rows.append({**base, "method": "grid top-1", "queries": len(xq), **summary(d), "points_per_query": 0,
                         "ms_batched": round(elapsed / len(xq) * 1e3, 3),
                         "ms_single_p50": single_p50(geo, xq, grid, args.single)})
            print(table(rows[-1:], list(rows[-1])))
            for label, settings, m in VARIANTS:
                geo.refiner = Refiner(lambda: model, RefineSettings(**settings))
                n = args.queries if (label == "descent L3") else args.variant_queries
                options = QueryOptions(k=1, search=f"refine={m}")
                d, elapsed = distances(geo, xq[:n], truth[:n], options)
                points = geo.refiner.points_encoded / n
                rows.append({**base, "method": label, "queries": n, **summary(d), "points_per_query": round(points, 1),
                             "ms_batched": round(elapsed / n * 1e3, 3),
                             "ms_single_p50": single_p50(geo, xq, options, args.single)})
                print(table(rows[-1:], list(rows[-1])))
    cols = ["res", "queries_kind", "method", "queries", "median_km", "p90_km", "p99_km", "within_1km", "within_25km",
            "points_per_query", "ms_batched", "ms_single_p50"]
    print(table(rows, cols))
    print(f"saved {save('refine.json', {'machine': machine(), 'args': vars(args) | {'indexes': str(args.indexes)}, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
