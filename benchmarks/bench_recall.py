"""Recall, accuracy loss and cost against index size: which codec should an H3 land index use?

For each resolution (land gallery, exact vectors cached in benchmarks/.cache) and each codec:
exact Flat, SQ8, fp16, PQ32/64/128, PQ with re-ranking (RFlat, Refine(SQ8)), OPQ, and inverted
lists that follow H3 parents (IVFH3) instead of k-means, over a range of nprobe:
recall@1 and recall@10 against exact search, extra top-1 error in km against exact search
(median, p99 = ``km_lost_p99``), bytes per vector, index size on disk, build time, ms per query
(one thread). Queries: location embeddings of real photo locations (GeoCLIP's 100K gallery
coordinates), and the same with image-like noise (``--noise-cos``: each query moved in a random
direction until its cosine with the clean query is 0.5; GeoCLIP image embeddings sit far from
the location embedding of their true place, not on it).

The default codec per resolution (``choose_default``): for each codec the smallest nprobe reaching
recall@10 >= 0.95 (clean queries) within 1 ms per query and no slower than exact search, then the
fewest code bytes per vector, ties to the faster (benchmarks/recall_rules.py);
geoindex.index.factory.MEASURED_DEFAULTS must match it (a test checks). Also per resolution: the energy spectrum of the gallery vectors (share
of the total held by the best k-dimensional subspace), which bounds what PCA or PQ can keep.
Results: benchmarks/results/recall.json (+ recall_vs_bytes.png, recall_vs_ms.png);
``--report`` prints the README tables from it. ``--quick``: res 3-4 (~3 min); res 3-5 ~30 min on
2 cores; res 6 (``--resolutions 6 --append``: a reduced codec list, 8.4 GB of cached vectors,
~8 min to encode once) about an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import faiss
import numpy as np

from common import (cached_store, exact_search_chunked, haversine_km, land_gallery, machine, noisy, photo_locations, save,
                    table, RESULTS)
from recall_report import plot, report
from recall_rules import GOAL_BYTES, chosen_all, choose_default, code_bytes

NPROBES = (1, 4, 16, 32, 64, 256)


def codecs(n: int, resolution: int, opq: str = "64") -> list[str]:
    from geoindex.index.factory import nlist_rule

    k = nlist_rule(n)
    if resolution >= 6:
        # 4M vectors on 2 cores: the codecs that decide the default and the <= 128 B goal. Flat
        # (exact search stands in: recall 1 by definition), fp16 and full-vector re-ranking
        # (4x / 2x the SQ8 memory, never the least-memory choice) and OPQ are left out.
        return ["IVFH3,SQ8", "IVFH3,SQ4", "IVFH3,PQ64", "IVFH3,PQ128", f"IVF{k},SQ8", f"IVF{k},PQ128"]
    out = ["Flat", f"IVF{k},SQ8", f"IVF{k},SQfp16", f"IVF{k},PQ32", f"IVF{k},PQ64", f"IVF{k},PQ128",
           f"IVF{k},PQ64,RFlat", f"IVF{k},PQ128,Refine(SQ8)", "IVFH3,SQ8", "IVFH3,PQ64", "IVFH3,PQ128", "IVFH3,SQ4"]
    if opq in ("64", "all"):
        out.append(f"OPQ64,IVF{k},PQ64")
    if opq == "all":
        out.append(f"OPQ128,IVF{k},PQ128")
    return out


def build(factory: str, resolution: int, cells: np.ndarray, xb, shared_quantizer: dict) -> tuple[faiss.Index, float]:
    """Build ``factory`` over the gallery; returns the index and the seconds a standalone build
    would take: k-means lists are trained once per list count and shared by every codec, and the
    training time is charged to each codec that reuses them."""
    from geoindex.index.builder import IndexBuilder
    from geoindex.index.factory import list_resolution_of, resolve
    from geoindex.index.h3lists import h3_centroids, list_numbers, list_parents

    t = time.perf_counter()
    n_parents = None
    if (list_res := list_resolution_of(factory, resolution)) is not None:
        parents = list_parents(cells, list_res)
        n_parents = len(parents)
    plan = resolve(factory, len(cells), resolution, n_parents=n_parents)
    builder = IndexBuilder(plan, use_gpu=False)
    index = builder.cpu_index
    lists = None
    if plan.h3_list_res is not None:
        lists = list_numbers(cells, parents, plan.h3_list_res)
        chunks = ((cells[s : s + 500_000], np.asarray(xb[s : s + 500_000])) for s in range(0, len(cells), 500_000))
        builder.set_h3_centroids(h3_centroids(chunks, parents, plan.h3_list_res))  # as build_index does
    elif isinstance(faiss.try_extract_index_ivf(index), faiss.IndexIVF) and not factory.startswith("OPQ"):
        ivf = faiss.extract_index_ivf(index)
        key = ivf.nlist
        if key in shared_quantizer:  # k-means once per nlist, shared by every codec
            centroids, kmeans_s = shared_quantizer[key]
            ivf.quantizer.add(centroids)
            t -= kmeans_s
    rng = np.random.default_rng(0)
    train_n = min(len(cells), max(65_536, 64 * getattr(faiss.try_extract_index_ivf(index), "nlist", 0)), 300_000)
    sample = np.ascontiguousarray(xb[np.sort(rng.choice(len(cells), train_n, replace=False))])
    ivf = faiss.try_extract_index_ivf(index)
    train_kmeans = (ivf is not None and plan.h3_list_res is None and not factory.startswith("OPQ")
                    and ivf.nlist not in shared_quantizer)
    if train_kmeans:  # time the list training alone, to charge it to the codecs that reuse it
        t_km = time.perf_counter()
        ivf.train_q1(len(sample), faiss.swig_ptr(sample), False, faiss.METRIC_INNER_PRODUCT)
        shared_quantizer[ivf.nlist] = (ivf.quantizer.reconstruct_n(0, ivf.nlist), time.perf_counter() - t_km)
    if not index.is_trained:
        builder.train(sample)
    for s in range(0, len(cells), 500_000):
        part = np.ascontiguousarray(xb[s : s + 500_000])
        builder.add(part, cells[s : s + 500_000], None if lists is None else lists[s : s + 500_000])
    return builder.finish(), time.perf_counter() - t


def bytes_per_vector(index: faiss.Index) -> float:
    with tempfile.NamedTemporaryFile() as f:
        faiss.write_index(index, f.name)
        size = os.path.getsize(f.name)
    return size, size / index.ntotal


REFINE_K_FACTOR = 8  # re-rank 8k PQ candidates with the refine codes


def refine_of(index: faiss.Index):
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return inner if isinstance(inner, faiss.IndexRefine) else None


SINGLE_QUERIES = 200  # timed one at a time, as a server answers them


def evaluate(index, factory, xq, gt, cells, latlng, pos_of, nprobe, rerank: int = 0, reranker=None,
             quantizer_ef: int = 256) -> dict:
    """Recall@1/10 and km lost against exact search. Timing on one thread (FAISS and, with
    ``rerank``, torch's encoder too): ``ms_per_query`` for the whole batch divided by its size;
    ``ms_single_p50/p99`` for SINGLE_QUERIES queries searched one at a time. The two differ most
    with re-ranking: a batch encodes each distinct candidate once in large matrix products,
    while one query streams the encoder's 38 MB of weights for a handful of points."""
    import torch

    if nprobe is not None:
        faiss.ParameterSpace().set_index_parameters(index, f"nprobe={nprobe}")
        if isinstance(faiss.downcast_index(faiss.extract_index_ivf(index).quantizer), faiss.IndexHNSW):
            faiss.ParameterSpace().set_index_parameters(index, f"quantizer_efSearch={quantizer_ef}")
    if refine_of(index) is not None:
        refine_of(index).k_factor = REFINE_K_FACTOR

    def search(q):
        D, I = index.search(q, max(10, rerank))
        return reranker.rerank(q, D, I, rerank) if rerank else (D, I)

    faiss.omp_set_num_threads(1)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t = time.perf_counter()
    D, I = search(xq)
    ms = 1000 * (time.perf_counter() - t) / len(xq)
    single = []
    for q in xq[:SINGLE_QUERIES]:
        t = time.perf_counter()
        search(q[None, :])
        single.append(1000 * (time.perf_counter() - t))
    faiss.omp_set_num_threads(os.cpu_count())
    torch.set_num_threads(torch_threads)
    I = I[:, :10]
    gt_ids = cells[gt]
    r1 = float(np.mean(I[:, 0] == gt_ids[:, 0]))
    r10 = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I.tolist(), gt_ids.tolist())]))
    ann = pos_of(I[:, 0])
    lost = haversine_km(latlng[ann, 0], latlng[ann, 1], latlng[gt[:, 0], 0], latlng[gt[:, 0], 1])
    return {"recall_at_1": round(r1, 4), "recall_at_10": round(r10, 4), "km_lost_median": round(float(np.median(lost)), 2),
            "km_lost_p99": round(float(np.percentile(lost, 99)), 2), "ms_per_query": round(ms, 4),
            "ms_single_p50": round(float(np.median(single)), 4), "ms_single_p99": round(float(np.percentile(single, 99)), 4)}


SPECTRUM_DIMS = (32, 64, 128, 256, 384)


def energy_spectrum(xb, sample: int = 200_000) -> dict[str, float]:
    """Share of the vectors' energy (sum of squared norms) that the best k-dimensional linear
    subspace keeps, for k in SPECTRUM_DIMS: eigenvalues of the uncentred second-moment matrix
    of a seeded sample. A code of b bytes that keeps recall must keep most of this energy."""
    rng = np.random.default_rng(5)
    pick = np.sort(rng.choice(len(xb), min(sample, len(xb)), replace=False))
    x = np.asarray(xb[pick], dtype=np.float64)
    w = np.linalg.eigvalsh(x.T @ x)[::-1]
    return {str(k): round(float(w[:k].sum() / w.sum()), 4) for k in SPECTRUM_DIMS}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=[3, 4, 5])
    p.add_argument("--quick", action="store_true", help="res 3-4, no OPQ")
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--noise-cos", type=float, default=0.5)
    p.add_argument("--nprobes", type=int, nargs="+", default=list(NPROBES))
    p.add_argument("--codecs", nargs="*", help="only these factory strings (default: the full list)")
    p.add_argument("--opq", choices=("none", "64", "all"), default="64",
                   help="OPQ codecs to measure: their rotation training is slow (OPQ64 ~2.5 min a resolution "
                        "on 2 cores; all adds OPQ128)")
    p.add_argument("--rerank", type=int, nargs="*", default=[16, 32, 64],
                   help="exact re-ranking depths measured for codes of <= 128 B (none: skip)")
    p.add_argument("--rerank-nprobes", type=int, nargs="+", default=[4, 16],
                   help="the nprobes measured with re-ranking (each costs R encoder passes per query)")
    p.add_argument("--rerank-from", choices=("store", "encoder"), default="store",
                   help="exact vectors for re-ranking: an fp16 exact store on disk, memory-mapped, as "
                        "build_index --store fp16 writes (default), or the location encoder")
    p.add_argument("--append", action="store_true",
                   help="keep rows of other resolutions already in results/recall.json")
    p.add_argument("--spectrum-only", action="store_true",
                   help="only (re)compute the energy spectrum of --resolutions into results/recall.json")
    p.add_argument("--report", action="store_true",
                   help="print the README tables and redraw the plots from results/recall.json (measures nothing)")
    args = p.parse_args(argv)
    saved = json.loads((RESULTS / "recall.json").read_text()) if (RESULTS / "recall.json").exists() else {}
    if args.report:
        print(report(saved["rows"]))
        plot(saved["rows"])
        return 0
    if args.quick:
        args.resolutions = [3, 4]
    spectrum = saved.get("spectrum", {}) if (args.append or args.spectrum_only) else {}
    if args.spectrum_only:
        for res in args.resolutions:
            spectrum[str(res)] = energy_spectrum(land_gallery(res)[2])
            print(f"res {res} energy kept by the best k dims: {spectrum[str(res)]}")
        save("recall.json", {**saved, "spectrum": spectrum})
        return 0
    from geoindex.encoders.location import encode_latlng, load_location_encoder
    from geoindex.locate.rerank import ExactReranker, StoreReranker

    model = load_location_encoder()
    photo = photo_locations(args.queries, seed=11)
    clean = encode_latlng(model, photo)
    query_sets = {"photo": clean, "photo+noise": noisy(clean, args.noise_cos)}
    rows: list[dict] = []
    if args.append and saved:
        rows = saved["rows"]
    params = {"queries": args.queries, "noise_cos": args.noise_cos, "nprobes": args.nprobes, "threads_search": 1,
              "rerank": args.rerank, "rerank_nprobes": args.rerank_nprobes, "threads_rerank_encoder": 1}
    for res in args.resolutions:
        t = time.perf_counter()
        cells, latlng, xb = land_gallery(res)
        print(f"res {res}: {len(cells):,} cells (gallery ready in {time.perf_counter() - t:.0f} s)")
        spectrum[str(res)] = energy_spectrum(xb)
        gts = {name: exact_search_chunked(q, xb, 10)[1] for name, q in query_sets.items()}

        def pos_of(ids):
            return np.searchsorted(cells, ids)

        if args.rerank_from == "store":
            store = cached_store(res, "fp16", cells, xb)
            reranker, disk_bpv, how = StoreReranker(store, pos_of), store.data.itemsize * 512, ", fp16 store"
        else:
            reranker, disk_bpv, how = ExactReranker(lambda ids: latlng[pos_of(ids)], device="cpu"), 0, ""

        assert np.all(np.diff(cells) > 0)
        shared: dict = {}
        for factory in args.codecs or codecs(len(cells), res, "none" if args.quick else args.opq):
            index, build_s = build(factory, res, cells, xb, shared)
            size, bpv = bytes_per_vector(index)
            name = factory if not factory.startswith("IVFH3") else index_name(factory, res)
            if refine_of(index) is not None:
                name += f" (k_factor {REFINE_K_FACTOR})"
            probes = [None] if faiss.try_extract_index_ivf(index) is None else args.nprobes
            # compact codes also with exact re-ranking of their top R (geoindex.locate.rerank), at fewer nprobes
            variants = [(name, 0, probes)] + [
                (f"{name} (rerank {r}{how})", r, [p for p in probes if p in args.rerank_nprobes])
                for r in (args.rerank if code_bytes(name) <= GOAL_BYTES and refine_of(index) is None else [])]
            for vname, rerank, vprobes in variants:
                # a codec measured again replaces its earlier rows at that resolution and nprobe
                rows = [r for r in rows if (r["resolution"], r["factory"]) != (res, vname) or r["nprobe"] not in vprobes]
                for nprobe in vprobes:
                    for qname, q in query_sets.items():
                        row = {"resolution": res, "n": len(cells), "factory": vname, "nprobe": nprobe, "rerank": rerank,
                               "queries": qname, "bytes_per_vector": round(bpv, 1), "index_mb": round(size / 1e6, 1),
                               "resident_bytes_per_vector": round(bpv, 1),
                               "disk_bytes_per_vector": disk_bpv if rerank else 0,
                               "rerank_from": (args.rerank_from if rerank else None),
                               "build_s": round(build_s, 1),
                               **evaluate(index, vname, q, gts[qname], cells, latlng, pos_of, nprobe, rerank, reranker)}
                        rows.append(row)
                print(table([r for r in rows if r["factory"] == vname and r["resolution"] == res and r["queries"] == "photo"],
                            ["factory", "nprobe", "bytes_per_vector", "build_s", "recall_at_1", "recall_at_10",
                             "km_lost_p99", "ms_per_query"]))
            del index
            save("recall.json", {"machine": machine(), "params": params, "rows": rows, "chosen": chosen_all(rows),
                                  "spectrum": spectrum})
        print(f"res {res} default: {choose_default(rows, res)}")
        del xb
    chosen = chosen_all(rows)
    save("recall.json", {"machine": machine(), "params": params, "rows": rows, "chosen": chosen, "spectrum": spectrum})
    plot(rows)
    print(f"saved {RESULTS / 'recall.json'} and plots")
    return 0


def index_name(factory: str, resolution: int) -> str:
    """``IVFH3,SQ4`` at res 6 -> ``IVFH3r3,SQ4``: the factory with its list resolution named."""
    from geoindex.index.factory import resolve

    return resolve(factory, 0, resolution, n_parents=1).factory


if __name__ == "__main__":
    raise SystemExit(main())
