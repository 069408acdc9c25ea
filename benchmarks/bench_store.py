"""Exact scores from disk: which store re-ranks fastest, and what each kind costs in exactness.

One compact index (res 5 land by default, ``IVFH3,PQ32`` at nprobe 16) finds R candidates per query; their
exact order then comes from
- geoindex's exact store (geoindex.store.exact_store: an .npy memory-mapped with numpy, rows
  gathered in ascending order, decoded, dotted) in fp32, fp16 and sq8;
- FAISS's own: ``IndexRefineFlat`` over the same compact index (ids = store rows), its refine
  ``IndexFlatIP`` read with ``IO_FLAG_MMAP_IFC`` (FAISS >= 1.11 maps the vectors instead of reading
  them);
- the location encoder (no store; geoindex.locate.rerank.ExactReranker).
Measured per R: one query at a time on one thread (p50, p99 ms, the whole search: FAISS + re-rank),
and recall@10 against exact search. The store files are warm in the page cache (a server that has
run a while).
Results: benchmarks/results/store.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import faiss
import numpy as np
from common import (
    CACHE,
    cached_store,
    exact_search_chunked,
    land_gallery,
    machine,
    photo_locations,
    save,
    single_query_ms,
    table,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=5)
    p.add_argument("--factory", default="IVFH3,PQ32")
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--rerank", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--single", type=int, default=300, help="queries timed one at a time")
    p.add_argument("--concurrent-rerank", type=int, default=32,
                   help="R for the concurrent encoder re-ranking rows (server threads without a store)")
    args = p.parse_args(argv)

    import torch
    from bench_recall import build

    from geoindex.encoders.location import encode_latlng, load_location_encoder
    from geoindex.locate.rerank import ExactReranker, StoreReranker

    cells, latlng, xb = land_gallery(args.resolution)
    model = load_location_encoder()
    xq = encode_latlng(model, photo_locations(args.queries, seed=17))
    gt = cells[exact_search_chunked(xq, xb, 10)[1]]
    index, _ = build(args.factory, args.resolution, cells, xb, {})
    faiss.ParameterSpace().set_index_parameters(index, f"nprobe={args.nprobe}")

    def rows_of(ids):
        return np.searchsorted(cells, ids)

    stores = {kind: cached_store(args.resolution, kind, cells, xb) for kind in ("fp32", "fp16", "sq8")}

    # FAISS's refine index over the same codes: ids must be rows of the refine index
    by_row = faiss.clone_index(index)
    ivf = faiss.extract_index_ivf(by_row)
    invlists = ivf.invlists
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            ids = faiss.rev_swig_ptr(invlists.get_ids(lst), size)
            ids[:] = rows_of(ids.copy())  # H3 id -> row, in place
    flat_path = CACHE / f"res{args.resolution}-land" / "refine-flat.faiss"
    if not flat_path.exists():
        flat = faiss.IndexFlatIP(xb.shape[1])
        for s in range(0, len(cells), 500_000):
            flat.add(np.ascontiguousarray(xb[s : s + 500_000]))
        with tempfile.NamedTemporaryFile(dir=flat_path.parent, delete=False) as f:
            faiss.write_index(flat, f.name)
        os.replace(f.name, flat_path)
        del flat
    mapped = faiss.read_index(str(flat_path), faiss.IO_FLAG_MMAP_IFC)
    faiss_refine = faiss.IndexRefine(by_row, mapped)  # refine scores from the mapped fp32 vectors
    with open(flat_path, "rb") as f:  # warm
        while f.read(1 << 26):
            pass

    encoder = ExactReranker(lambda ids: latlng[rows_of(ids)], model=model)
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    rows = []
    for r in args.rerank:
        k = max(10, r)

        def ours(q, reranker):
            D, I = index.search(q, k)
            return reranker.rerank(q, D, I, r)[1][:, :10]

        def theirs(q):
            params = faiss.IndexRefineSearchParameters()
            params.k_factor = r / 10
            return cells[faiss_refine.search(q, 10, params=params)[1]]

        variants = {f"store {kind}": (lambda q, s=s: ours(q, StoreReranker(s, rows_of))) for kind, s in stores.items()}
        variants["FAISS IndexRefine, mmap fp32"] = theirs
        if r <= 64:
            variants["encoder (no store)"] = lambda q: ours(q, encoder)
        for name, fn in variants.items():
            found = np.concatenate([fn(xq[i : i + 100]) for i in range(0, len(xq), 100)])
            ms = single_query_ms(fn, xq, args.single)
            r10 = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), gt.tolist())]))
            rows.append({"rerank": r, "source": name, "recall_at_10": round(r10, 4),
                         "ms_single_p50": round(float(np.median(ms)), 3),
                         "ms_single_p99": round(float(np.percentile(ms, 99)), 3)})
            print(table(rows[-1:], list(rows[-1])))
    print(table(rows, list(rows[0])))
    concurrent = concurrent_encoder_reranks(index, xq, latlng, rows_of, model, args.concurrent_rerank)
    print(table(concurrent, list(concurrent[0])))
    save("store.json", {"machine": machine(), "params": vars(args), "rows": rows, "concurrent": concurrent})
    return 0


def concurrent_encoder_reranks(index, xq, latlng, rows_of, model, r: int, per_thread: int = 40) -> list[dict]:
    """Without a store, server threads re-rank with the encoder: queries/s of 1, 4 and 8 threads
    each searching and re-ranking single queries, with the threads' encoder calls coalesced into one
    batch (geoindex.locate.rerank.Coalescer, what the server does) and without (each thread its own
    encoder pass). torch with every core, as the server runs it (each encoder call may use them all)."""
    import threading

    import torch

    torch.set_num_threads(os.cpu_count())

    from geoindex.locate.rerank import ExactReranker

    out = []
    for threads in (1, 4, 8):
        for coalesce in (True, False):
            reranker = ExactReranker(lambda ids: latlng[rows_of(ids)], model=model)
            if not coalesce:
                reranker._batches = reranker._encode  # each caller its own encoder pass
            barrier = threading.Barrier(threads + 1)

            def work(t):
                barrier.wait()
                for i in range(per_thread):
                    q = xq[(t * per_thread + i) % len(xq)][None, :]
                    D, I = index.search(q, r)
                    reranker.rerank(q, D, I, r)

            pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
            for th in pool:
                th.start()
            barrier.wait()
            t0 = time.perf_counter()
            for th in pool:
                th.join()
            qps = threads * per_thread / (time.perf_counter() - t0)
            batching = reranker._batches.callers / max(reranker._batches.calls, 1) if coalesce else 1.0
            out.append({"threads": threads, "coalesced": coalesce, "rerank": r, "queries_per_s": round(qps, 1),
                        "callers_per_encoder_call": round(batching, 2)})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
