"""How fast is one query, and how does it compare with exact search and the reference?

On an index directory (default ``indexes/res5-land``, built if missing): p50/p99 latency of one
embedding -> top-10 predictions with metadata through ``Geolocator.locate`` (the hot path), with
10 and with the default 256 softmax candidates, and with per-call search strings (``--search``:
exact re-ranking of the top 16 and 32 by default); in the same run, exact flat search over the same
vectors, the same top-10 with one DuckDB row lookup per result (what the in-memory columns avoid),
and the reference GeoCLIP ``predict()`` gallery step (re-encode its 100K gallery, score, top-k).
Queries: location embeddings of real photo locations (GeoCLIP's 100K gallery coordinates).

Prints a table; writes ``benchmarks/results/query.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from common import ROOT, machine, photo_locations, run_cli, save, table


def percentiles(times_s: list[float]) -> dict:
    ms = np.array(times_s) * 1000
    return {"p50_ms": round(float(np.median(ms)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4)}


def time_each(fn, queries: np.ndarray) -> list[float]:
    out = []
    for q in queries:
        t = time.perf_counter()
        fn(q[None, :])
        out.append(time.perf_counter() - t)
    return out


def overhead_rows(geo, xq: np.ndarray, rows: list[dict], rounds: int = 5) -> dict:
    """What locate adds over the raw FAISS search of the same index with the same settings (its
    stored nprobe, the 256 candidates the softmax runs over): FAISS alone, FAISS + the exact
    re-ranking (the index's rerank=R from its store), and the whole locate (plan, search,
    re-ranking, softmax, metadata). Interleaved in ``rounds`` so drift on a shared machine hits all
    three alike; the medians of the per-round p50s are compared."""
    from geoindex import QueryOptions

    opts = QueryOptions(k=10, candidates=256)
    plan = geo.plan(opts)
    n = plan.searched

    def faiss_only(q):
        geo.index.search(q, n)

    def faiss_rerank(q):
        geo._search_plan(q, plan.n_candidates, plan.depth, plan)

    def locate(q):
        geo.locate(q, opts)

    steps = {"raw FAISS search (index defaults, k=candidates)": faiss_only,
             "raw FAISS search + exact re-ranking": faiss_rerank, "geoindex locate (k=10, 256 candidates)": locate}
    p50 = {name: [] for name in steps}
    part = max(len(xq) // rounds, 1)
    for r in range(rounds):
        for name, fn in steps.items():
            fn(xq[:20])  # warm-up
            p50[name].append(percentiles(time_each(fn, xq[r * part:(r + 1) * part]))["p50_ms"])
    med = {name: float(np.median(v)) for name, v in p50.items()}
    for name, value in med.items():
        rows.append({"method": f"{name} [interleaved]", "p50_ms": round(value, 4)})
    faiss_ms, rerank_ms, locate_ms = med.values()
    return {"searched": n, "depth": plan.depth, "rounds": rounds, "p50_ms": med,
            "locate_over_faiss_p50": round(locate_ms / faiss_ms - 1, 4),
            "rerank_over_faiss_p50": round(rerank_ms / faiss_ms - 1, 4)}


def reference_gallery_step(repeats: int) -> float:
    """Median seconds of GeoCLIP predict()'s per-image work minus the image encoder: encode the
    100K gallery with the reference location encoder, cosine with one image vector, softmax, top-k."""
    import torch
    import torch.nn.functional as F
    from geoclip.model.location_encoder import LocationEncoder as Reference

    from geoindex.cells.csv_gallery import read_gallery_csv
    from geoindex.encoders.weights import gallery_100k_path

    ref = Reference().eval()
    gallery = torch.from_numpy(read_gallery_csv(gallery_100k_path()).astype(np.float32))
    image = F.normalize(torch.randn(1, 512), dim=1)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.no_grad():  # as predict() does
            loc = F.normalize(ref(gallery), dim=1)
            probs = (39.7 * image @ loc.T).softmax(dim=-1)
            torch.topk(probs, 10, dim=1)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=Path, default=ROOT / "indexes" / "res5-land")
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--reference-repeats", type=int, default=3)
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--skip-exact", action="store_true", help="skip exact flat search (re-encodes the gallery: 8 min at res 6)")
    p.add_argument("--search", nargs="*", default=["rerank=16", "rerank=32"],
                   help="also time locate with these per-call search strings (exact re-ranking by default)")
    args = p.parse_args(argv)

    if not (args.index / "manifest.json").exists():
        print(f"building {args.index} (res 5 land, ~2.5 min)")
        _, proc = run_cli(["-m", "build_index", "--resolution", "5", "--out", str(args.index), "-q", "--no-progress"])
        if proc.returncode:
            raise SystemExit(proc.stderr)

    import duckdb
    import faiss

    from geoindex import Geolocator, QueryOptions
    from geoindex.encoders.location import encode_latlng, load_location_encoder

    faiss.omp_set_num_threads(1)  # one query at a time: threads only add overhead (and serve per-request)
    geo = Geolocator(args.index)
    model = load_location_encoder()
    xq = encode_latlng(model, photo_locations(args.queries, seed=1))
    rows = []

    for cands in (10, 256):
        opts = QueryOptions(k=10, candidates=cands)
        geo.locate(xq[:50], opts)  # warm-up
        rows.append({"method": f"geoindex locate (k=10, {cands} candidates)", **percentiles(time_each(lambda q: geo.locate(q, opts), xq))})
    result_overhead = overhead_rows(geo, xq, rows)

    for search in args.search:  # torch uses its default threads for the re-rank encoder (2 here)
        opts = QueryOptions(k=10, candidates=256, search=search)
        geo.locate(xq[:50], opts)  # warm-up (loads the encoder for rerank)
        rows.append({"method": f"geoindex locate (k=10, 256 candidates, {search})",
                     **percentiles(time_each(lambda q: geo.locate(q, opts), xq[:500]))})

    con = duckdb.connect(str(geo.dir.cells_path), read_only=True)

    def with_duckdb(q):
        _, I = geo.index.search(q, 10)
        for cell in I[0]:
            con.execute("SELECT lat, lng, country, admin1, place FROM cells WHERE cell = ?", [int(cell)]).fetchone()

    rows.append({"method": "FAISS + DuckDB row lookups (k=10)", **percentiles(time_each(with_duckdb, xq[:300]))})

    if not args.skip_exact:
        xb = encode_latlng(model, np.column_stack((geo.table.lat, geo.table.lng)))
        flat = faiss.IndexFlatIP(xb.shape[1])
        flat.add(xb)
        del xb
        rows.append({"method": "exact flat search (k=10, no metadata)",
                     **percentiles(time_each(lambda q: flat.search(q, 10), xq[:300]))})
        faiss.omp_set_num_threads(os.cpu_count())
        rows.append({"method": "exact flat search, all threads",
                     **percentiles(time_each(lambda q: flat.search(q, 10), xq[:300]))})
        del flat

    result = {"machine": machine(), "index": geo.summary(), "queries": args.queries, "rows": rows,
              "overhead": result_overhead}
    if not args.skip_reference:
        ref_s = reference_gallery_step(args.reference_repeats)
        result["reference_gallery_step_s"] = round(ref_s, 3)
        result["speedup_vs_reference_p50"] = round(ref_s / (rows[0]["p50_ms"] / 1000))
        rows.append({"method": "reference GeoCLIP predict() gallery step (100K)", "p50_ms": round(ref_s * 1000, 1)})
    print(table(rows, ["method", "p50_ms", "p99_ms", "mean_ms"]))
    print(f"locate's overhead over the same index's raw FAISS search (p50, interleaved): "
          f"{result_overhead['locate_over_faiss_p50']:.0%} (goal <= 30%); "
          f"of which the exact re-ranking {result_overhead['rerank_over_faiss_p50']:.0%}")
    if "speedup_vs_reference_p50" in result:
        print(f"speed-up vs reference gallery step: {result['speedup_vs_reference_p50']:,}x (p50)")
    print(f"saved {save(f'query_{args.index.name}.json', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
