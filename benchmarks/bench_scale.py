"""Past one machine: what the Ray build costs, what a big on-disk index costs to serve, and the plan
for res 7/8/9.

Subcommands (each prints a table and merges its section into ``benchmarks/results/scale.json``):

- ``compare``: the same H3 build (default res 5, lists on disk) in one process and on a local Ray
  cluster, one after the other in this run: wall time, encode rate, peak RSS of the build's whole
  process tree (driver, raylet, Ray workers) and of the driver, and whether the two indexes are
  the same bytes. On 2 cores expect ~1x: Ray adds processes, not cores.
- ``build ARGS...``: one ``build_index ARGS`` (e.g. the res-7 land build) under the same process-tree
  sampler; records its manifest's timings, sizes and self-check, and the driver's peak memory split
  into anonymous (``peak_rss.driver_anon_mib``: what runs a machine out of memory) and file-backed
  pages (mapped shards and stores, which the kernel can drop), overall and per build stage.
  ``--label res6-land`` keeps the row under ``builds`` (the driver-memory rows).
- ``serve DIR``: query latency on the index through ``Geolocator.locate`` (p50/p99 cold: its files
  evicted from the page cache with ``posix_fadvise(DONTNEED)`` and a fresh process; warm: the same
  queries again), then ``geoindex-serve --embeddings-only`` on it: RSS idle and after requests.
- ``plan``: the scale table (cells, bytes, hours on 1/8/64 CPU workers and on GPUs) computed from
  the measured per-worker encode rate and bytes per vector in scale.json, and the encoder's FLOPs;
  with the res-5 and res-6 ``builds`` rows, the driver's peak anonymous memory at res 7-9 on the
  line through those two measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, machine, photo_locations, table

SCALE_JSON = RESULTS / "scale.json"
# Land cells per resolution under this project's land rule: measured builds to res 6 (README); res 7
# the issue's ~29M until scale.json holds the res-7 build's count; res 8/9 x7 per resolution.
LAND_CELLS = {5: 594_367, 6: 4_084_324, 7: 29_000_000}
# A GPU's sustained fp32 rate on the encoder's GEMMs (stated, not measured here: no GPU was lent):
# 40 TFLOP/s is 60% of an H100 SXM's 67 TFLOP/s fp32 peak (TF32 tensor cores would be ~6x that).
GPU_TFLOPS = 40.0


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _rss_mib(pid: int) -> dict[str, float]:
    """``{"rss", "anon", "file"}`` MiB of ``pid`` now (VmRSS, RssAnon, RssFile); zeros when it is gone."""
    from geoindex.pipeline.memory import status_mib

    status = status_mib(pid)
    return {name: status.get(field, 0.0) for name, field in (("rss", "VmRSS"), ("anon", "RssAnon"), ("file", "RssFile"))}


class TreeSampler:
    """Peak RSS of a process and all its descendants (sampled every 0.5 s): the tree's total, the
    root's own (all of it, and apart: anonymous memory, which is what runs a machine out of memory,
    and file-backed pages of mapped shards and stores, which the kernel can drop), and the largest
    other process (a Ray worker)."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, {"tree_mib": 0.0, "driver_mib": 0.0, "driver_anon_mib": 0.0,
                                    "driver_file_mib": 0.0, "largest_worker_mib": 0.0, "processes": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            kids, tree, stack = _children(), [], [self.pid]
            while stack:
                p = stack.pop()
                tree.append(p)
                stack.extend(kids.get(p, []))
            mem = {p: _rss_mib(p) for p in tree}
            rss = {p: m["rss"] for p, m in mem.items()}
            others = [v for p, v in rss.items() if p != self.pid]
            for key, value in (("tree_mib", sum(rss.values())), ("driver_mib", rss[self.pid]),
                               ("driver_anon_mib", mem[self.pid]["anon"]), ("driver_file_mib", mem[self.pid]["file"]),
                               ("largest_worker_mib", max(others, default=0.0)), ("processes", len(tree))):
                self.peak[key] = max(self.peak[key], round(value, 1))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_build(args: list[str], log: Path | None = None) -> dict:
    """``build_index ARGS`` in a child process under the sampler; the manifest's figures."""
    cmd = [sys.executable, "-m", "build_index", *args]
    t = time.perf_counter()
    with open(log or os.devnull, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        sampler = TreeSampler(proc.pid)
        rc = proc.wait()
    wall = time.perf_counter() - t
    peak = sampler.stop()
    if rc:
        raise SystemExit(f"build_index {' '.join(args)} failed (rc {rc}): see {log}")
    out_dir = Path(args[args.index("--out") + 1])
    m = json.loads((out_dir / "manifest.json").read_text())
    timings = m["timings_s"]
    resumed = re.search(r"resuming: (\d+) finished shards", log.read_text(errors="replace")) if log else None
    if resumed:  # this run encoded only the shards left: whole-gallery rates would overstate it
        return {"args": " ".join(args), "wall_s_this_run": round(wall, 1), "cells": m["gallery"]["count"],
                "resumed_with_finished_shards": int(resumed.group(1)), "built_with": m["index"]["built_with"],
                "factory": m["index"]["factory"], "search": m["index"]["search"], "lists": m["index"]["lists"],
                "timings_s_this_run": timings, "peak_rss": peak, "driver_peak_rss_mib_manifest": m["peak_rss_mib"],
                "driver_memory_by_stage_mib": m.get("peak_memory", {}).get("stages"),
                "files_bytes": {k: v["bytes"] for k, v in m["files"].items() if "/" not in k},
                "hot_columns_bytes": sum(v["bytes"] for k, v in m["files"].items() if k.startswith("hot/")),
                "memory": m["memory"], "self_check": m["self_check"]}
    return {"args": " ".join(args), "wall_s": round(wall, 1), "cells": m["gallery"]["count"],
            "built_with": m["index"]["built_with"], "factory": m["index"]["factory"], "search": m["index"]["search"],
            "lists": m["index"]["lists"], "timings_s": timings,
            # encode seconds are summed over the shards, so on Ray this is one actor's rate
            "encode_points_per_s_per_worker": round(m["gallery"]["count"] / max(timings.get("encode", 0), 1e-9)),
            "points_per_s_wall": round(m["gallery"]["count"] / wall),
            "peak_rss": peak, "driver_peak_rss_mib_manifest": m["peak_rss_mib"],
            "driver_memory_by_stage_mib": m.get("peak_memory", {}).get("stages"),
            "files_bytes": {k: v["bytes"] for k, v in m["files"].items() if "/" not in k},
            "hot_columns_bytes": sum(v["bytes"] for k, v in m["files"].items() if k.startswith("hot/")),
            "memory": m["memory"], "self_check": m["self_check"]}


def compare(args) -> dict:
    rows = {}
    base = ["--resolution", str(args.resolution), "--no-progress", "--overwrite", *args.extra]
    for label, extra in (("one process", []), ("ray local", ["--ray"])):
        out = args.workdir / f"res{args.resolution}-{label.split()[0]}"
        rows[label] = run_build([*base, *extra, "--out", str(out)], args.workdir / f"{label.split()[0]}.log")
        rows[label]["out"] = str(out)
    a, b = (Path(r["out"]) for r in rows.values())
    same = {name: _sha(a / name) == _sha(b / name) for name in ("vectors.faiss", "lists.ivfdata", "hot/cell.npy")
            if (a / name).exists()}
    one, ray = rows["one process"]["wall_s"], rows["ray local"]["wall_s"]
    result = {"resolution": args.resolution, "cores": os.cpu_count(), "rows": rows, "same_bytes": same,
              "ray_speedup": round(one / ray, 3)}
    print(table([{"build": k, "wall_s": v["wall_s"], "encode_s": round(v["timings_s"]["encode"], 1),
                  "pts/s_wall": v["points_per_s_wall"], "pts/s_per_worker": v["encode_points_per_s_per_worker"],
                  "tree_peak_mib": v["peak_rss"]["tree_mib"],
                  "driver_peak_mib": v["peak_rss"]["driver_mib"], "processes": v["peak_rss"]["processes"]}
                 for k, v in rows.items()],
                ["build", "wall_s", "encode_s", "pts/s_wall", "pts/s_per_worker", "tree_peak_mib", "driver_peak_mib", "processes"]))
    print(f"same bytes: {same}; Ray / one process speed-up {result['ray_speedup']}x on {os.cpu_count()} cores")
    return result


def _sha(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _evict(index_dir: Path) -> int:
    """Drop the index's file pages from the page cache (no root needed); the bytes evicted."""
    total = 0
    for path in index_dir.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            total += path.stat().st_size
    return total


_LATENCY = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {bench!r})
from common import photo_locations
from geoindex import Geolocator, QueryOptions
from geoindex.encoders.location import encode_latlng, load_location_encoder
xq = encode_latlng(load_location_encoder(), photo_locations({n}, seed=31))
t = time.perf_counter(); geo = Geolocator({index!r}); open_s = time.perf_counter() - t
out = {{"open_s": open_s}}
for phase in ("cold", "warm"):
    ms = []
    for i in range(len(xq)):
        t = time.perf_counter(); geo.locate(xq[i:i + 1], QueryOptions(k=10)); ms.append(1e3 * (time.perf_counter() - t))
    out[phase] = ms
print(json.dumps(out))
"""


def serve(args) -> dict:
    from bench_serve_memory import measure

    index = args.index.resolve()
    evicted = _evict(index)
    code = _LATENCY.format(bench=str(ROOT / "benchmarks"), n=args.queries, index=str(index))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    lat = json.loads(proc.stdout.strip().splitlines()[-1])
    from geoindex.encoders.location import encode_latlng, load_location_encoder

    xq = encode_latlng(load_location_encoder(), photo_locations(500, seed=23))
    _evict(index)
    server = measure(index, index.name, xq, args.requests)
    m = json.loads((index / "manifest.json").read_text())
    files = {k: v["bytes"] for k, v in m["files"].items()}
    result = {"index": str(index), "cells": m["gallery"]["count"], "factory": m["index"]["factory"],
              "search": m["index"]["search"], "lists": m["index"].get("lists", "memory"),
              "evicted_bytes": evicted, "open_s": round(lat["open_s"], 2), "queries": args.queries,
              **{f"{phase}_ms_{q}": round(float(np.percentile(lat[phase], q)), 2)
                 for phase in ("cold", "warm") for q in (50, 99)},
              "disk_bytes": sum(files.values()), "files_bytes": files, "server": server}
    print(table([{k: v for k, v in result.items() if not isinstance(v, dict)} | {
        "server_rss_mib": server["after_vmrss_mib"], "server_anon_mib": server["after_rssanon_mib"]}],
        ["cells", "lists", "open_s", "cold_ms_50", "cold_ms_99", "warm_ms_50", "warm_ms_99", "server_rss_mib",
         "server_anon_mib"]))
    return result


def encoder_flops_per_point() -> int:
    """FLOPs of one location-encoder forward pass: 2 x the MACs of its matrix products."""
    from geoindex.encoders.location import load_location_encoder

    model = load_location_encoder()
    macs = sum(w.shape[0] * w.shape[1] * w.shape[2] for name, w in model.named_parameters() if name.startswith("w"))
    macs += model.b.shape[0] * model.b.shape[1] * model.b.shape[2]  # the Fourier features' projection
    return 2 * macs


def driver_anon_line(builds: dict) -> tuple[float, float] | None:
    """(MiB, MiB a cell): the line through the driver's peak anonymous memory of the one-process
    res-5 and res-6 land builds (``build --label res5-land`` / ``res6-land``), for the computed
    res 7-9 rows; None until both are measured."""
    a, b = builds.get("res5-land"), builds.get("res6-land")
    if not a or not b or "driver_anon_mib" not in a["peak_rss"] or "driver_anon_mib" not in b["peak_rss"]:
        return None
    slope = (b["peak_rss"]["driver_anon_mib"] - a["peak_rss"]["driver_anon_mib"]) / (b["cells"] - a["cells"])
    slope = max(slope, 0.0)
    return a["peak_rss"]["driver_anon_mib"] - slope * a["cells"], slope


def plan(results: dict) -> dict:
    """The scale table, computed. Per CPU worker: the rate one Ray actor (1 thread, one CPU)
    reached in ``compare``'s Ray build for its whole shard job (enumerate, encode, geocode). The
    driver's stages (train, merge, self-check, DuckDB, hot columns, store) per cell from the same
    build, the parallel add left out. Bytes per vector from the largest measured build. GPUs: the
    encoder's FLOPs at ``GPU_TFLOPS``, plus the shard job's CPU side on 16 cores a GPU."""
    ray_row = results.get("compare", {}).get("rows", {}).get("ray local")
    if ray_row is None:
        raise SystemExit("run `bench_scale.py compare` first: the plan needs a measured per-worker rate")
    t = ray_row["timings_s"]
    cells_meas = ray_row["cells"]
    job_s = (t["enumerate"] + t["encode"] + t["geocode"]) / cells_meas  # one actor's seconds a cell
    cpu_side_s = (t["enumerate"] + t["geocode"]) / cells_meas
    driver_s = (t["total"] - t["add"] - t["write_shards"]) / cells_meas - job_s / results["compare"]["cores"]
    measured = results.get("build") or ray_row
    n_meas = measured["cells"]
    files = measured["files_bytes"]
    per_vec = {"codes_and_ids": files.get("lists.ivfdata", files["vectors.faiss"]) / n_meas,
               "hot_columns": measured["hot_columns_bytes"] / n_meas,
               "exact_store": files.get("exact.npy", 0) / n_meas,
               "duckdb": files["cells.duckdb"] / n_meas}
    flops = encoder_flops_per_point()
    gpu_s = flops / (GPU_TFLOPS * 1e12) + cpu_side_s / 16
    cells = dict(LAND_CELLS)
    if results.get("build", {}).get("cells") and "--resolution 7" in results["build"]["args"]:
        cells[7] = results["build"]["cells"]
    cells[8], cells[9] = cells[7] * 7, cells[7] * 49
    anon = driver_anon_line(results.get("builds", {}))
    rows = []
    for res in (7, 8, 9):
        n = cells[res]
        row = {"res": res, "cells_M": round(n / 1e6, 1),
               "lists_GB": round(n * per_vec["codes_and_ids"] / 1e9, 1),
               "hot_GB": round(n * per_vec["hot_columns"] / 1e9, 1),
               "store_GB": round(n * per_vec["exact_store"] / 1e9, 1),
               "duckdb_GB": round(n * per_vec["duckdb"] / 1e9, 1),
               "spill_GB": round(n * 1024 / 1e9, 1)}
        for w in (1, 8, 64):
            row[f"h_{w}cpu"] = round(n * job_s / w / 3600, 2)
        for g in (1, 8):
            row[f"h_{g}gpu"] = round(n * gpu_s / g / 3600, 2)
        row["h_driver"] = round(n * driver_s / 3600, 2)
        if anon is not None:
            row["driver_anon_gib"] = round((anon[0] + anon[1] * n) / 1024, 2)
        rows.append(row)
    print(table(rows, list(rows[0])))
    return {"per_worker_points_per_s": round(1 / job_s, 1), "cpu_side_s_per_point": cpu_side_s,
            "driver_s_per_point": driver_s, "measured_from": measured.get("args"),
            "bytes_per_vector": {k: round(v, 1) for k, v in per_vec.items()},
            "encoder_flops_per_point": flops, "gpu_tflops_assumed": GPU_TFLOPS,
            "driver_anon_mib_line": None if anon is None else {"base_mib": round(anon[0], 1),
                                                                "mib_per_million_cells": round(anon[1] * 1e6, 2)},
            "gpu_points_per_s_computed": round(1 / gpu_s), "cells": cells, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="one process vs Ray local, same build, same run")
    c.add_argument("--resolution", type=int, default=5)
    c.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".cache" / "scale")
    c.add_argument("extra", nargs="*", default=["--lists-on-disk"], help="more build_index options")
    b = sub.add_parser("build", help="one build_index under the process-tree sampler: build -- BUILD_INDEX_ARGS")
    b.add_argument("--label", default=None, help="keep the row under builds[LABEL] (e.g. res5-land, res6-land: the "
                   "driver-memory rows) instead of the single `build` row the plan reads")
    b.add_argument("args", nargs=argparse.REMAINDER)
    s = sub.add_parser("serve", help="latency cold/warm and server RSS on an index")
    s.add_argument("index", type=Path)
    s.add_argument("--queries", type=int, default=300)
    s.add_argument("--requests", type=int, default=1000)
    sub.add_parser("plan", help="the computed res 7/8/9 table")
    args = p.parse_args(argv)

    results = json.loads(SCALE_JSON.read_text()) if SCALE_JSON.exists() else {}
    start = json.loads(json.dumps(results))  # what this run read: only its changes are written back
    if args.command == "compare":
        args.workdir.mkdir(parents=True, exist_ok=True)
        results["compare"] = compare(args)
    elif args.command == "build":
        log = RESULTS / "scale" / f"build{'-' + args.label if args.label else ''}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        row = run_build([a for a in args.args if a != "--"], log)
        if args.label:
            results.setdefault("builds", {})[args.label] = row
        else:
            results["build"] = row
        print(json.dumps(row, indent=2))
        print(table([{"build": args.label or "build", "cells": row["cells"], "driver_anon_mib": row["peak_rss"]["driver_anon_mib"],
                      "driver_file_mib": row["peak_rss"]["driver_file_mib"], "driver_rss_mib": row["peak_rss"]["driver_mib"]}],
                    ["build", "cells", "driver_anon_mib", "driver_file_mib", "driver_rss_mib"]))
    elif args.command == "serve":
        results.setdefault("serve", {})[args.index.name] = serve(args)
    else:
        results["plan"] = plan(results)
    # merged into the file as it is now: another run (a res-5 build beside a res-6 one) may have written since
    latest = json.loads(SCALE_JSON.read_text()) if SCALE_JSON.exists() else {}
    for key, value in results.items():
        if key == "builds":
            latest.setdefault("builds", {}).update(value)
        elif value != start.get(key):
            latest[key] = value
    latest["machine"] = machine()
    SCALE_JSON.parent.mkdir(parents=True, exist_ok=True)
    SCALE_JSON.write_text(json.dumps(latest, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
