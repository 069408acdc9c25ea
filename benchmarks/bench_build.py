"""What does a build cost, and what does the default index give back?

1. Location-encoder throughput, this project vs the reference GeoCLIP class, same run,
   interleaved repeats, median points/s and the ratio.
2. ``build_index`` wall time and peak RSS for H3 land galleries (default res 3, 4, 5; add 6 with
   ``--resolutions 3 4 5 6``, ~15 min more on 2 cores; ``--quick`` = res 3, 4).
3. For each built index: recall@10 and top-1 distance of the default index against exact search,
   queries = location embeddings of real photo locations (GeoCLIP's 100K gallery coordinates).

Prints a table and writes ``benchmarks/results/build.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from common import CACHE, exact_search_chunked, haversine_km, machine, median_of, photo_locations, run_cli, save, table


def bench_encoder(n: int, repeats: int, batch: int) -> dict:
    import torch
    from geoclip.model.location_encoder import LocationEncoder as Reference

    from geoindex.encoders.location import load_location_encoder

    ours, ref = load_location_encoder(), Reference().eval()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.column_stack((rng.uniform(-90, 90, n), rng.uniform(-180, 180, n))).astype(np.float32))

    def run(model):
        with torch.inference_mode():
            for i in range(0, n, batch):
                model(x[i : i + batch])

    run(ours), run(ref)  # warm-up
    t_ours, t_ref = [], []
    for _ in range(repeats):  # interleaved: both see the same machine noise
        t_ours.append(median_of(lambda: run(ours), 1)[0])
        t_ref.append(median_of(lambda: run(ref), 1)[0])
    ours_pps, ref_pps = n / statistics.median(t_ours), n / statistics.median(t_ref)
    return {"points": n, "batch": batch, "repeats": repeats, "threads": torch.get_num_threads(),
            "geoindex_points_per_s": round(ours_pps), "reference_points_per_s": round(ref_pps),
            "ratio": round(ours_pps / ref_pps, 3)}


def evaluate_index(index_dir: Path, queries: np.ndarray, resolution: int | None = None) -> dict:
    """Recall and top-1 distance of a built index against exact search over exact vectors
    (benchmarks/.cache when it holds the same cells, else re-encoded from the cell centres)."""
    import duckdb
    import faiss

    from geoindex.index.search import apply_search_settings
    from geoindex.encoders.location import encode_latlng, load_location_encoder
    from geoindex.store.manifest import open_index_dir

    idx = open_index_dir(index_dir, verify="size")
    con = duckdb.connect(str(idx.cells_path), read_only=True)
    cols = con.execute("SELECT cell, lat, lng FROM cells ORDER BY cell").fetchnumpy()
    cells, lat, lng = cols["cell"], np.asarray(cols["lat"]), np.asarray(cols["lng"])
    model = load_location_encoder()
    t = time.perf_counter()
    cached = CACHE / f"res{resolution}-land"
    if resolution is not None and (cached / "vectors.npy").exists() and np.array_equal(np.load(cached / "cells.npy"), cells):
        xb = np.load(cached / "vectors.npy", mmap_mode="r")  # the same exact vectors, encoded by land_gallery
        encode_s = None
    else:
        xb = encode_latlng(model, np.column_stack((lat, lng)))  # exact ground truth, re-encoded
        encode_s = round(time.perf_counter() - t, 1)
    xq = encode_latlng(model, queries)
    _, gt_rows = exact_search_chunked(xq, xb, 10)
    gt = cells[gt_rows]
    index = faiss.read_index(str(idx.vectors_path))
    apply_search_settings(index, idx.search)
    t = time.perf_counter()
    _, I = index.search(xq, 10)
    search_s = time.perf_counter() - t
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, gt)]))
    pos = np.searchsorted(cells, I[:, 0])
    exact_pos = gt_rows[:, 0]
    ann_km = haversine_km(queries[:, 0], queries[:, 1], lat[pos], lng[pos])
    exact_km = haversine_km(queries[:, 0], queries[:, 1], lat[exact_pos], lng[exact_pos])
    lost = haversine_km(lat[pos], lng[pos], lat[exact_pos], lng[exact_pos])
    return {
        "queries": len(queries),
        "recall_at_1": round(float(np.mean(I[:, 0] == gt[:, 0])), 4),
        "recall_at_10": round(recall, 4),
        "top1_km_median": round(float(np.median(ann_km)), 1),
        "exact_top1_km_median": round(float(np.median(exact_km)), 1),
        "km_lost_median": round(float(np.median(lost)), 2),
        "km_lost_p99": round(float(np.percentile(lost, 99)), 2),
        "ms_per_query_batch": round(1000 * search_s / len(queries), 4),
        "reencode_s": encode_s,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=[3, 4, 5])
    p.add_argument("--quick", action="store_true", help="res 3 and 4 only, fewer repeats")
    p.add_argument("--queries", type=int, default=5000)
    p.add_argument("--encoder-points", type=int, default=65_536)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", type=Path, default=None, help="where indexes are built (default: temp)")
    p.add_argument("--keep", action="store_true", help="keep the built indexes")
    args = p.parse_args(argv)
    if args.quick:
        args.resolutions, args.repeats, args.encoder_points = [3, 4], 3, 32_768

    out = {"machine": machine(), "encoder": bench_encoder(args.encoder_points, args.repeats, 8192), "builds": []}
    e = out["encoder"]
    print(f"encoder: geoindex {e['geoindex_points_per_s']:,} pts/s, reference {e['reference_points_per_s']:,} "
          f"pts/s, ratio {e['ratio']:.3f} (median of {e['repeats']}, {e['threads']} threads)")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="geoindex-bench-"))
    queries = photo_locations(args.queries)
    for res in args.resolutions:
        target = work / f"res{res}-land"
        wall, proc = run_cli(["-m", "build_index", "--resolution", str(res), "--out", str(target),
                              "--overwrite", "--no-progress", "-q"])
        if proc.returncode != 0:
            raise SystemExit(f"build res {res} failed: {proc.stderr}")
        m = json.loads((target / "manifest.json").read_text())
        row = {"resolution": res, "cells": m["gallery"]["count"], "factory": m["index"]["factory"],
               "search": m["index"]["search"], "wall_s": round(wall, 1),
               "peak_rss_mib": m["peak_rss_mib"], "timings_s": m["timings_s"],
               "index_mb": round(sum(f["bytes"] for f in m["files"].values()) / 1e6, 1)}
        row.update(evaluate_index(target, queries, res))
        out["builds"].append(row)
        print(table([row], ["resolution", "cells", "factory", "search", "wall_s", "peak_rss_mib", "index_mb",
                            "recall_at_10", "top1_km_median", "exact_top1_km_median", "km_lost_p99"]))
        save("build.json", out)  # after every resolution: a long run keeps what it measured
        if not args.keep:
            shutil.rmtree(target)
    print()
    print(table(out["builds"], ["resolution", "cells", "factory", "wall_s", "peak_rss_mib", "recall_at_1",
                                "recall_at_10", "top1_km_median", "exact_top1_km_median", "km_lost_median",
                                "km_lost_p99"]))
    print(f"saved {save('build.json', out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
