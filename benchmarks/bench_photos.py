"""How a reference-photo gallery scales: 1M and 10M photo embeddings in FAISS on this machine, and the
computed plan for MP-16 (4.7M), YFCC's ~48M geotagged photos and 100M.

No real photo collection or CLIP weights can be had here, so the vectors are synthetic but shaped like
a real collection in the GeoCLIP query space:

- places: the 100K real photo locations of GeoCLIP's gallery (MP-16 photos), each also jittered
  ``--jitter-copies`` times by ~1-10 km, encoded once with the pretrained location encoder (cached);
- photos: a place drawn with Zipf-like popularity (landmarks get many photos, most places few), its
  location embedding plus noise at cosine ~0.5 to it (``--cosine``). The noise is anisotropic, in a
  random 128-d subspace with a power-law spectrum, as CLIP image embeddings have a low effective
  dimension; isotropic 512-d noise would make every photo a near-orthogonal outlier, which real
  photos are not.

Each size is generated ONCE into a float16 exact store on disk (``--work``/store-N-....npy, kept
between runs; chunk ``c`` of the stream is always the same array), and the exact top-10 of the
held-out queries is computed ONCE by brute force over that store's own (fp16-rounded) rows and cached
(gt-N-...-qQ-setS.npy). Every factory then trains on a seeded sample of the store and adds it chunk by
chunk from the memmap (built indexes are cached too), so the 10M set (20 GB in fp32) is never in
memory. Two held-out query sets: ``--query-set 0`` to choose a configuration (tuning), ``1`` to
report it (test).

Measured per configuration: build time (train + add), resident bytes a vector (the serialised index:
codes, ids, list overhead and coarse quantizer; the exact store is on disk), recall@10 against exact
search after re-ranking, and the one-query p50 latency on one thread (coarse search + list scan +
reading and scoring the candidates' exact rows; the store is in the page cache when it fits, as on a
serving machine with enough RAM for it: the note says so). On a machine shared with other jobs the
wall time of a query mostly measures waiting for a core, so ``ms_single_p50`` is the query thread's CPU
time (``time.thread_time``: its cost on a core of its own); the wall-clock p50 is recorded beside it. Rows go to benchmarks/results/photos.json.

    python benchmarks/bench_photos.py --vectors 1000000 --factory "IVF{nlist},PQ64x4fs" --query-set 0 \\
        --sweep 64:1000,128:2000                                     # tune on the tuning queries
    python benchmarks/bench_photos.py --vectors 1000000 10000000     # the chosen configuration, test queries
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: the timed re-ranking is one thread's work

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from common import CACHE, RESULTS, machine, photo_locations, table  # noqa: E402

DIM = 512
OUT = RESULTS / "photos.json"
# The configuration chosen on the tuning queries, then measured on the test queries. Round 1 chose
# PCAR256,IVF{nlist},PQ64x4fs probing 3/16 of the lists with 1,500 re-ranked on the 1M tuning queries
# (0.964); at 10M it gave 0.909 at 13.7 ms. Round 2, tuned on 300 tuning queries at 10M: 384 PCA
# dimensions and 48-byte codes (finer codes, fewer candidates lost), nprobe 224 of 4,096 lists, the
# fastest tuning row with recall@10 >= 0.95; nprobe 128 where there are <= 1,024 lists (1M: 0.960).
CHOSEN_FACTORY = "PCAR384,IVF{nlist},PQ96x4fs"
CHOSEN_RERANK = 2000


def chosen_search(n: int) -> str:
    """The chosen nprobe:rerank pair at ``n`` vectors (``"224:2000"`` at 10M)."""
    return f"{128 if nlist_for(n) <= 1024 else 224}:{CHOSEN_RERANK}"


def nlist_for(n: int) -> int:
    """Inverted lists for ``n`` vectors: the power of two nearest sqrt(n) (k-means training stays minutes on 2 cores)."""
    return int(2 ** round(np.log2(np.sqrt(n))))


def places(jitter_copies: int, seed: int) -> np.ndarray:
    """(m, 512) float32 L2-normalised location embeddings of real photo places (+ jittered copies), cached."""
    path = CACHE / f"photo-places-{jitter_copies}-{seed}.npy"
    if path.exists():
        return np.load(path)
    from geoindex.encoders.location import encode_latlng, load_location_encoder

    pts = photo_locations(100_000, seed)
    rng = np.random.default_rng(seed)
    copies = [pts]
    for _ in range(jitter_copies):
        km = rng.uniform(1, 10, len(pts))[:, None] * rng.standard_normal((len(pts), 2))
        j = pts + km / 111.0 * np.stack([np.ones(len(pts)), 1 / np.cos(np.radians(pts[:, 0])).clip(None, 20)], 1)
        j[:, 0] = j[:, 0].clip(-89.9, 89.9)
        j[:, 1] = (j[:, 1] + 180) % 360 - 180
        copies.append(j)
    latlng = np.concatenate(copies)
    vecs = encode_latlng(load_location_encoder(), latlng, batch_size=4096)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    return vecs


class PhotoStream:
    """Deterministic synthetic photo embeddings: chunk ``c`` is the same array whenever it is asked for."""

    def __init__(self, place_vecs: np.ndarray, cosine: float, seed: int, rank: int = 128):
        self.places = place_vecs
        self.seed = seed
        rng = np.random.default_rng([seed, 999])
        w = 1.0 / np.arange(1, len(place_vecs) + 1) ** 0.8  # Zipf-like popularity
        rng.shuffle(w)
        self.cdf = np.cumsum(w / w.sum())
        basis, _ = np.linalg.qr(rng.standard_normal((DIM, rank)))
        spectrum = 1.0 / np.sqrt(np.arange(1, rank + 1))
        self.mix = (spectrum[:, None] * basis.T).astype(np.float32)  # (rank, 512)
        # noise norm r such that cos(place, place + noise) = 1 / sqrt(1 + r^2) = cosine
        self.scale = np.float32(np.sqrt(1 / cosine**2 - 1) / np.sqrt((spectrum**2).sum()))

    def chunk(self, c: int, n: int) -> np.ndarray:
        """(n, 512) float32 L2-normalised photo embeddings of chunk ``c``."""
        rng = np.random.default_rng([self.seed, c])
        which = np.searchsorted(self.cdf, rng.random(n)).clip(0, len(self.places) - 1)
        z = rng.standard_normal((n, self.mix.shape[0]), dtype=np.float32)
        x = self.places[which] + (z @ self.mix) * self.scale
        faiss.normalize_L2(x)
        return x


def store_for(stream: PhotoStream, n: int, chunk: int, path: Path) -> np.ndarray:
    """(n, 512) float16 memmap of the first ``n`` photos, written once chunk by chunk and kept."""
    if not path.exists():
        tmp = path.with_name(path.stem + ".partial.npy")
        store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, DIM))
        t = time.perf_counter()
        for c, start in enumerate(range(0, n, chunk)):
            store[start : start + chunk] = stream.chunk(c, min(chunk, n - start))
            print(f"  store {start + chunk:>11,} / {n:,} ({time.perf_counter() - t:.0f} s)", flush=True)
        store.flush()
        del store
        tmp.rename(path)
    return np.load(path, mmap_mode="r")


def ground_truth(store: np.ndarray, xq: np.ndarray, k: int, path: Path, step: int = 100_000) -> np.ndarray:
    """(nq, k) int64 exact top-k ids by inner product against the fp16 store's own rows, cached."""
    if path.exists():
        return np.load(path)
    heap = faiss.ResultHeap(len(xq), k, keep_max=True)
    t = time.perf_counter()
    for s in range(0, len(store), step):
        D = xq @ np.asarray(store[s : s + step], dtype=np.float32).T
        part = min(k, D.shape[1])
        I = np.argpartition(-D, part - 1, axis=1)[:, :part]
        heap.add_result(np.take_along_axis(D, I, 1), I + s)
        if s % 1_000_000 == 0:
            print(f"  truth {s + step:>11,} / {len(store):,} ({time.perf_counter() - t:.0f} s)", flush=True)
    heap.finalize()
    np.save(path, heap.I)
    return heap.I


def build(store: np.ndarray, factory: str, train_n: int, chunk: int, seed: int, path: Path) -> dict:
    """Train ``factory`` on a seeded sample of the store, add the store chunk by chunk; cached at ``path``."""
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return {"index": faiss.read_index(str(path)), **json.loads(meta.read_text())}
    index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))  # the concrete IVF class, not IndexIVF
    ivf.cp.niter = 10
    if hasattr(ivf, "do_polysemous_training"):
        ivf.do_polysemous_training = False  # the factory's default: minutes of annealing, unused here
    rows = np.sort(np.random.default_rng([seed, 7]).choice(len(store), min(train_n, len(store)), replace=False))
    t0 = time.perf_counter()
    index.train(np.asarray(store[rows], dtype=np.float32))
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, len(store), chunk):
        index.add(np.asarray(store[start : start + chunk], dtype=np.float32))
        print(f"  {start + chunk:>11,} / {len(store):,} added ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = {"train_s": train_s, "add_s": time.perf_counter() - t0, "train_n": len(rows)}
    faiss.write_index(index, str(path))
    meta.write_text(json.dumps(out))
    return {"index": index, **out}


def search_rerank(index, store: np.ndarray, xq: np.ndarray, k: int, candidates: int) -> np.ndarray:
    """(nq, k) ids: ``candidates`` from the compressed index, re-scored with the exact fp16 store.

    The candidates' fp16 rows are scored by a FAISS fp16 scalar-quantizer index holding just them (its
    SIMD half-float kernels: ~0.2 us a candidate; numpy's astype or ``sa_decode`` take ~1 us)."""
    _, I = index.search(xq, candidates)
    out = np.empty((len(xq), k), dtype=np.int64)
    for q in range(len(xq)):
        ids = np.sort(I[q][I[q] >= 0])  # ascending rows: a forward pass over the memmap
        RESCORE.reset()
        RESCORE.add_sa_codes(np.take(store, ids, axis=0).view(np.uint8))
        _, pos = RESCORE.search(xq[q : q + 1], k)
        out[q] = np.where(pos[0] >= 0, ids[pos[0].clip(0)], -1)
    return out


RESCORE = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)


def recall_at(found: np.ndarray, gt: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(g[:k])) / k for f, g in zip(found, gt)]))


def measure(built: dict, store: np.ndarray, xq: np.ndarray, gt: np.ndarray, factory: str,
            sweep: list[tuple[int, int]], timed: int, query_set: int) -> list[dict]:
    """One row per (nprobe, rerank): recall@10 on all queries, then ``timed`` queries one at a time."""
    index, n = built["index"], len(store)
    resident = len(faiss.serialize_index(index)) / n
    ivf = faiss.extract_index_ivf(index)
    rows = []
    for nprobe, cand in sweep:
        ivf.nprobe = nprobe
        recall = recall_at(search_rerank(index, store, xq, 10, cand), gt, 10)
        faiss.omp_set_num_threads(1)
        search_rerank(index, store, xq[:20], 10, cand)  # warm
        ms, wall = [], []
        for i in range(timed):  # CPU time of this one thread: what the query costs on a core of its own
            t, w = time.thread_time(), time.perf_counter()
            search_rerank(index, store, xq[i : i + 1], 10, cand)
            ms.append((time.thread_time() - t) * 1e3)
            wall.append((time.perf_counter() - w) * 1e3)
        rows.append({"kind": "photos", "vectors": n, "factory": factory, "search": f"nprobe={nprobe},rerank={cand}",
                     "recall_at_10": round(recall, 4), "resident_bytes_per_vector": round(resident, 1),
                     "exact_store_bytes_per_vector_on_disk": DIM * 2, "ms_single_p50": round(float(np.median(ms)), 3),
                     "ms_single_p99": round(float(np.percentile(ms, 99)), 3),
                     "ms_single_wall_p50_shared_machine": round(float(np.median(wall)), 3),
                     "build_s": round(built["train_s"] + built["add_s"], 1), "train_s": round(built["train_s"], 1),
                     "add_s": round(built["add_s"], 1), "train_n": built["train_n"],
                     "queries": len(xq), "query_set": QUERY_SETS[query_set]})
        print(table(rows[-1:], ["vectors", "factory", "search", "recall_at_10", "resident_bytes_per_vector",
                                "ms_single_p50", "ms_single_wall_p50_shared_machine", "build_s"]), flush=True)
    return rows


QUERY_SETS = {0: "tuning", 1: "test"}


def plan(rows: list[dict]) -> list[dict]:
    """Computed (not measured) plan for 4.7M / 48M / 100M from the largest measured size's chosen row
    (the configuration fixed on the 1M tuning queries, measured on the test queries)."""
    chosen = [r for r in rows if r.get("chosen") and r.get("query_set") == "test"]
    if not chosen:
        return []
    best = max(chosen, key=lambda r: r["vectors"])
    out = []
    for n, name in ((4_700_000, "MP-16"), (48_000_000, "YFCC geotagged"), (100_000_000, "100M")):
        f = n / best["vectors"]
        out.append({"kind": "photos-plan", "collection": name, "vectors": n, "from": f"{best['vectors']:,} measured: "
                    f"{best['factory']} {best['search']}", "resident_gib": round(best["resident_bytes_per_vector"] * n / 2**30, 2),
                    "exact_store_gib_on_disk": round(DIM * 2 * n / 2**30, 1),
                    "build_h_2_cores": round(best["build_s"] * f / 3600, 2),
                    "nlist": nlist_for(n), "recall_at_10_measured_at_source": best["recall_at_10"],
                    # the chosen rule probes a fixed fraction of sqrt(n) lists: the codes scanned grow as n
                    "ms_single_p50_same_fraction_probed": round(best["ms_single_p50"] * f, 1),
                    "ms_single_p50_same_lists_probed": round(float(best["ms_single_p50"] * np.sqrt(f)), 1)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--factory", nargs="+", default=[CHOSEN_FACTORY],
                    help="FAISS factory strings; {nlist} becomes 2^round(log2(sqrt(n)))")
    ap.add_argument("--sweep", default="", help="nprobe:rerank candidate pairs (default: the chosen one, "
                    "128 lists probed up to 1,024 lists, else 224, and 2,000 re-ranked)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--query-set", type=int, choices=sorted(QUERY_SETS), default=1,
                    help="0: the tuning queries (choose a configuration on them), 1: the test queries (report)")
    ap.add_argument("--timed", type=int, default=300, help="queries timed one at a time")
    ap.add_argument("--chunk", type=int, default=250_000)
    ap.add_argument("--train", type=int, default=0, help="training sample (0: 64 a list, at least 65,536)")
    ap.add_argument("--jitter-copies", type=int, default=2)
    ap.add_argument("--cosine", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=CACHE / "photos",
                    help="the fp16 stores, ground truths and built indexes, kept between runs")
    ap.add_argument("--threads", type=int, default=1, help="FAISS threads for the build (default 1: on a "
                    "shared, oversubscribed machine OpenMP teams mostly wait for each other)")
    ap.add_argument("--plan-only", action="store_true", help="recompute the plan from photos.json's rows")
    ap.add_argument("--prepare-only", action="store_true", help="write the stores and ground truths, build nothing")
    args = ap.parse_args()
    if args.plan_only:
        data = json.loads(OUT.read_text())
        data["plan"] = plan(data["rows"])
        OUT.write_text(json.dumps(data, indent=2) + "\n")
        print(json.dumps(data["plan"], indent=1))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    stream = PhotoStream(places(args.jitter_copies, args.seed), args.cosine, args.seed)
    places_s = time.perf_counter() - t
    xq = stream.chunk(20_000_000 + args.query_set, args.queries)  # held-out photos: chunks no store holds
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    rows = data.get("rows", [])
    for n in args.vectors:
        key = f"{n}-seed{args.seed}-cos{args.cosine}-jit{args.jitter_copies}"
        store = store_for(stream, n, args.chunk, args.work / f"store-{key}.npy")
        gt = ground_truth(store, xq, 10, args.work / f"gt-{key}-q{args.queries}-set{args.query_set}.npy")
        if args.prepare_only:
            continue
        for pattern in args.factory:
            factory = pattern.format(nlist=nlist_for(n))
            sweep = [tuple(int(v) for v in p.split(":")) for p in (args.sweep or chosen_search(n)).split(",")]
            train_n = args.train or max(64 * nlist_of(factory), 65_536)
            print(f"{n:,} vectors, {factory}, training on {train_n:,}", flush=True)
            faiss.omp_set_num_threads(args.threads)
            name = re.sub(r"[^A-Za-z0-9]+", "_", factory)
            built = build(store, factory, train_n, args.chunk, args.seed, args.work / f"index-{key}-{name}-t{train_n}.faiss")
            new = measure(built, store, xq, gt, factory, sweep, args.timed, args.query_set)
            for r in new:
                r["chosen"] = factory == CHOSEN_FACTORY.format(nlist=nlist_for(n)) and \
                    r["search"] == "nprobe={},rerank={}".format(*chosen_search(n).split(":"))
            done = {row_key(r) for r in new}
            rows = [r for r in rows if row_key(r) not in done] + new
            OUT.write_text(json.dumps({"machine": machine(), "note": NOTE, "places_s": round(places_s, 1),
                                       "params": {k: str(v) for k, v in vars(args).items()},
                                       "rows": rows, "plan": plan(rows)}, indent=2) + "\n")
            del built
    print(table(plan(rows), ["collection", "vectors", "resident_gib", "exact_store_gib_on_disk", "build_h_2_cores",
                             "ms_single_p50_same_fraction_probed", "ms_single_p50_same_lists_probed"]))


def row_key(row: dict) -> tuple:
    """What a re-measured row replaces: the same size, factory, search and query set."""
    return row["vectors"], row["factory"], row["search"], row.get("query_set")


def nlist_of(factory: str) -> int:
    """The inverted lists a factory string names (``IVF4096...`` -> 4096)."""
    return int(re.search(r"IVF(\d+)", factory).group(1))


NOTE = ("Synthetic photo embeddings (real MP-16 photo locations through the pretrained GeoCLIP location encoder, "
        "+ anisotropic noise at cosine ~0.5), not real photos. Ground truth: exact top-10 over the same fp16 store's rows. "
        "query_set 'tuning' rows chose configurations; 'test' rows (other held-out photos) report them; 'chosen' marks the "
        "configuration the tuning rows picked. Machine: 2 cores shared with other builds (load 6-9): ms_single_* is the "
        "query thread's CPU time, the wall p50 beside it; the same row measured twice differed by up to ~25%. "
        "Resident = serialised index (codes, ids, lists, PCA, coarse quantizer); the float16 exact store (1024 B/vector) "
        "is on disk and only candidates' rows are read; p50 was timed with it in the page cache. "
        "The plan rows are computed from the largest measured chosen row, not measured.")

if __name__ == "__main__":
    main()
