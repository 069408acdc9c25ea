"""What does an HNSW coarse quantizer buy an IVF index? (``IVFH3_HNSW32`` and friends)

Opens a built IVF index (default: the res-6 default index, ``IVFH3r3,SQ4``), and swaps its flat
coarse quantizer for an HNSW graph over the same centroids (built here in memory: the lists and
codes stay byte for byte what build_index wrote, which is what ``--factory IVFH3_HNSW32,SQ4`` builds).
For each quantizer: the share of the ``nprobe`` best lists the graph finds, the share of the
flat quantizer's top-10 cells found, and one query at a time on one thread (p50, p99), plain and
with ``refine=1`` (the refinement's encoder shares the cache with the centroid scan). Queries:
real photo locations as exact location embeddings. Results: benchmarks/results/quantizer.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import ROOT, machine, photo_locations, save, single_query_ms, table


def p50_p99(fn, xq, n) -> tuple[float, float]:
    ms = single_query_ms(fn, xq, n)
    return round(float(np.median(ms)), 3), round(float(np.percentile(ms, 99)), 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=Path, default=ROOT / "indexes" / "res6-land")
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--single", type=int, default=500)
    p.add_argument("--refine-single", type=int, default=100)
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256, 512])
    args = p.parse_args(argv)

    import faiss

    from geoindex import Geolocator, QueryOptions
    from geoindex.encoders.location import encode_latlng
    from geoindex.index.factory import HNSW_QUANTIZER_EF_CONSTRUCTION

    faiss.omp_set_num_threads(1)
    geo = Geolocator(args.index)
    ivf = faiss.extract_index_ivf(geo.index)
    xq = encode_latlng(geo.reranker.model, photo_locations(args.queries, seed=31))
    flat = ivf.quantizer
    _, lists_flat = flat.search(xq, ivf.nprobe)
    _, top_flat = geo.index.search(xq, 10)
    plain, refined = QueryOptions(k=10), QueryOptions(k=10, search="refine=1")
    rows = []

    def measure(label: str, build_s: float | None) -> None:
        _, lists = ivf.quantizer.search(xq, ivf.nprobe)
        _, top = geo.index.search(xq, 10)
        rows.append({
            "quantizer": label, "build_s": build_s,
            "lists_found": round(float(np.mean([len(set(a) & set(b)) for a, b in zip(lists, lists_flat)]) / ivf.nprobe), 4),
            "top10_same": round(float(np.mean([len(set(a) & set(b)) for a, b in zip(top, top_flat)]) / 10), 4),
            "top1_same": round(float(np.mean(top[:, 0] == top_flat[:, 0])), 4),
            **dict(zip(("ms_p50", "ms_p99"), p50_p99(lambda q: geo.locate(q, plain), xq, args.single))),
            **dict(zip(("refine_ms_p50", "refine_ms_p99"), p50_p99(lambda q: geo.locate(q, refined), xq,
                                                                     args.refine_single))),
        })
        print(table(rows[-1:], list(rows[-1])))

    measure(f"flat ({ivf.nlist:,} centroids)", None)
    centroids = flat.reconstruct_n(0, ivf.nlist)
    for ef in args.ef:
        graph = faiss.IndexHNSWFlat(ivf.d, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_QUANTIZER_EF_CONSTRUCTION  # as build_index sets it
        t = time.perf_counter()
        graph.add(centroids)
        build_s = round(time.perf_counter() - t, 2)
        graph.hnsw.efSearch = ef
        ivf.quantizer = graph
        measure(f"HNSW{args.hnsw_m} efSearch={ef}", build_s)
        ivf.quantizer = flat
    cols = list(rows[0])
    print(table(rows, cols))
    params = {"index": str(args.index), "factory": geo.dir.factory, "search": str(geo.dir.search),
              "queries": args.queries, "single": args.single, "threads_search": 1}
    print(f"saved {save('quantizer.json', {'machine': machine(), 'params': params, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
