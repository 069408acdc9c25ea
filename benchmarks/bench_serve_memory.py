"""What geoindex-serve holds in memory with a compact index and an exact store, against the default.

For each index directory: start ``geoindex-serve --embeddings-only`` on it, send ``--requests``
single-embedding locate requests (real photo locations), and read the server's ``/proc`` status:
``VmRSS`` split into ``RssAnon`` (the process's own memory: FAISS codes, the cell table, Python,
torch) and ``RssFile`` (file pages mapped and touched: the exact store's rows read so far, shared
libraries). Latency p50 of the requests (HTTP included, one client) comes along.

The compact index is assembled from the benchmark cache instead of encoding the gallery again (the
res-6 encode is ~20 min here): FAISS index built by bench_recall.build from the cached exact vectors,
``cells.duckdb`` copied from the default build of the same gallery (``indexes/res<R>-land``, same
cells), the fp16 store hard-linked from bench_recall's cache, and a manifest with every file's size
and SHA-256, so the server opens and verifies it like any index. Results: results/serve_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import faiss
import numpy as np
from common import ROOT, cached_store, land_gallery, machine, photo_locations, save, table


def assemble(resolution: int, factory: str, search: str, out: Path) -> Path:
    """An index directory for ``factory`` over the cached res-``resolution`` gallery (see above)."""
    from bench_recall import build, index_name

    from geoindex.store import exact_store, manifest

    source = ROOT / "indexes" / f"res{resolution}-land"
    src = json.loads((source / manifest.MANIFEST).read_text())
    cells, _, xb = land_gallery(resolution)
    if src["gallery"]["count"] != len(cells):
        raise SystemExit(f"{source} holds {src['gallery']['count']} cells, the cache {len(cells)}: rebuild one")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    index, build_s = build(factory, resolution, cells, xb, {})
    faiss.write_index(index, str(out / manifest.VECTORS))
    shutil.copy(source / manifest.CELLS, out / manifest.CELLS)
    store = cached_store(resolution, "fp16", cells, xb)
    os.link(store.path, out / exact_store.STORE)
    m = dict(src)
    m["index"] = {**src["index"], "factory_requested": factory, "factory": index_name(factory, resolution),
                  "faiss_factory": "assembled by benchmarks/bench_serve_memory.py", "search": search}
    m["store"] = {"kind": "fp16", "file": exact_store.STORE, "order": "cell", "bytes_per_vector": 1024}
    resident = (out / manifest.VECTORS).stat().st_size
    disk = (out / exact_store.STORE).stat().st_size
    m["memory"] = {"resident_bytes": resident, "resident_bytes_per_vector": round(resident / len(cells), 1),
                   "disk_bytes": disk, "disk_bytes_per_vector": round(disk / len(cells), 1)}
    m["timings_s"] = {**src["timings_s"], "add": round(build_s, 1)}
    m["files"] = manifest.file_entries(out, (manifest.VECTORS, manifest.CELLS, exact_store.STORE))
    manifest.write_manifest(out, m)
    return out


def proc_memory(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            fields[key.lower() + "_mib"] = round(int(value.split()[0]) / 1024, 1)
    return fields


def measure(index: Path, label: str, xq: np.ndarray, requests: int) -> dict:
    from bench_api import Server

    server = Server(index, "--embeddings-only")
    try:
        idle = proc_memory(server.proc.pid)
        times = []
        url = f"http://127.0.0.1:{server.port}/v1/locate/embedding"
        for i in range(requests):
            body = json.dumps({"embeddings": [xq[i % len(xq)].tolist()], "top_k": 10}).encode()
            req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            t = time.perf_counter()
            with urllib.request.urlopen(req) as r:
                assert r.status == 200
                r.read()
            times.append(1000 * (time.perf_counter() - t))
        busy = proc_memory(server.proc.pid)
    finally:
        server.stop()
    m = json.loads((index / "manifest.json").read_text())
    return {"index": label, "factory": m["index"]["factory"], "search": m["index"]["search"],
            "index_resident_mb": round(m.get("memory", {}).get("resident_bytes",
                                                               m["files"]["vectors.faiss"]["bytes"]) / 1e6, 1),
            "store_mb": round(m.get("memory", {}).get("disk_bytes", 0) / 1e6, 1),
            **{f"idle_{k}": v for k, v in idle.items()}, **{f"after_{k}": v for k, v in busy.items()},
            "http_ms_p50": round(float(np.median(times)), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=6)
    p.add_argument("--factory", default="IVFH3r2,PQ32")
    p.add_argument("--search", default="nprobe=8,rerank=256")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".cache" / "serve-memory")
    args = p.parse_args(argv)
    from geoindex.encoders.location import encode_latlng, load_location_encoder

    xq = encode_latlng(load_location_encoder(), photo_locations(500, seed=23))
    compact = assemble(args.resolution, args.factory, args.search, args.workdir / f"res{args.resolution}-compact")
    rows = [measure(ROOT / "indexes" / f"res{args.resolution}-land", "default", xq, args.requests),
            measure(compact, "compact + fp16 store", xq, args.requests)]
    print(table(rows, ["index", "factory", "search", "index_resident_mb", "store_mb", "idle_vmrss_mib",
                       "after_vmrss_mib", "after_rssanon_mib", "after_rssfile_mib", "http_ms_p50"]))
    save("serve_memory.json", {"machine": machine(), "params": {k: str(v) for k, v in vars(args).items()},
                               "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
