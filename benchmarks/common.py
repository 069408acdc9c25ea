"""Shared pieces of the benchmarks: machine info, queries, exact search, distances, timing.

Benchmarks are scripts; the library never imports this module.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from geoindex.cells.geocode import EARTH_RADIUS_KM, haversine_km  # noqa: E402,F401  (one radius and one distance for library and benchmarks)


def machine() -> dict:
    from geoindex.store.manifest import versions

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions()}


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def median_of(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def single_query_ms(fn, xq: np.ndarray, n: int) -> np.ndarray:
    """Milliseconds of ``fn(xq[i:i+1])`` for the first ``n`` queries, one call at a time."""
    times = []
    for i in range(n):
        t = time.perf_counter()
        fn(xq[i : i + 1])
        times.append(time.perf_counter() - t)
    return np.array(times) * 1e3


def photo_locations(m: int, seed: int = 0) -> np.ndarray:
    """(m, 2) lat, lng of real photo locations: a seeded sample of GeoCLIP's 100K gallery."""
    from geoindex.cells.csv_gallery import read_gallery_csv
    from geoindex.encoders.weights import gallery_100k_path

    pts = read_gallery_csv(gallery_100k_path())
    return pts[np.random.default_rng(seed).choice(len(pts), m, replace=False)]


def run_cli(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - t, proc


def table(rows: list[dict], cols: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(str(r.get(c, "")).rjust(w) for c, w in zip(cols, widths)) for r in rows]
    return "\n".join(lines)


CACHE = ROOT / "benchmarks" / ".cache"


def land_gallery(resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cells (n,) int64, latlng (n, 2) float64, exact vectors (n, 512) float32) of the H3 land
    gallery at ``resolution``, encoded once and cached under benchmarks/.cache (memory-mapped;
    res 6 is 8.4 GB and ~8 min of encoding on 2 cores)."""
    from geoindex.cells.gallery import h3_shard, h3_shard_roots
    from geoindex.encoders.location import encode_latlng, load_location_encoder

    folder = CACHE / f"res{resolution}-land"
    done = folder / "vectors.npy"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        batches = [h3_shard(r, resolution, "land") for r in h3_shard_roots(resolution)]
        cells = np.concatenate([b.cell for b in batches])
        latlng = np.concatenate([b.latlng for b in batches])
        np.save(folder / "cells.npy", cells)
        np.save(folder / "latlng.npy", latlng)
        model = load_location_encoder()
        tmp = folder / "vectors.tmp.npy"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(cells), 512))
        for start in range(0, len(cells), 65536):
            out[start : start + 65536] = encode_latlng(model, latlng[start : start + 65536])
        out.flush()
        del out
        tmp.rename(done)
    return (np.load(folder / "cells.npy"), np.load(folder / "latlng.npy"),
            np.load(done, mmap_mode="r"))


def cached_store(resolution: int, kind: str, cells: np.ndarray, xb):
    """The land gallery's exact store of ``kind`` (geoindex.store.exact_store), written once under
    benchmarks/.cache as ``build_index --store KIND`` writes it (renamed into place when complete),
    opened memory-mapped and read through once: in the page cache, as a server that has run a while
    has it."""
    from geoindex.store.exact_store import STORE, open_store, write_store

    folder = CACHE / f"res{resolution}-land" / f"store-{kind}"
    step = 500_000
    if not (folder / STORE).exists():
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        write_store(tmp, kind, cells, lambda: ((cells[s : s + step], np.asarray(xb[s : s + step]))
                                               for s in range(0, len(cells), step)))
        tmp.rename(folder)
    store = open_store(folder, {"kind": kind}, len(cells))
    for start in range(0, len(cells), step):
        np.asarray(store.data[start : start + step]).max()
    return store


def noisy(xq: np.ndarray, target_cos: float, seed: int = 0) -> np.ndarray:
    """Queries with image-like spread: q + n, n a random direction of norm t = sqrt(1/c^2 - 1),
    so that cos(q_noisy, q) ~= c; then L2-normalised."""
    rng = np.random.default_rng([seed, 7919])  # salted: never the same stream as the caller's
    n = rng.normal(size=xq.shape).astype(np.float32)
    n -= (n * xq).sum(axis=1, keepdims=True) * xq  # orthogonal to q
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    t = np.sqrt(1 / target_cos**2 - 1)
    out = xq + t * n
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def exact_search_chunked(xq: np.ndarray, xb: np.ndarray, k: int, chunk: int = 500_000) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over a (possibly memory-mapped) base, chunk by chunk."""
    import faiss

    D = np.full((len(xq), k), -np.inf, dtype=np.float32)
    I = np.full((len(xq), k), -1, dtype=np.int64)
    for start in range(0, len(xb), chunk):
        part = np.ascontiguousarray(xb[start : start + chunk])
        d, i = faiss.knn(xq, part, k, metric=faiss.METRIC_INNER_PRODUCT)
        d2 = np.concatenate([D, d], axis=1)
        i2 = np.concatenate([I, i + start], axis=1)
        top = np.argsort(-d2, axis=1)[:, :k]
        D, I = np.take_along_axis(d2, top, 1), np.take_along_axis(i2, top, 1)
    return D, I
