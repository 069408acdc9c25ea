"""How much load does geoindex-serve take, and does micro-batching pay?

A real load generator (wrk, C, from Debian's `wrk` package) over loopback against a running
`geoindex-serve` on a res-5 land index (``indexes/res5-land``, built if missing):

1. ``POST /v1/locate/embedding`` (one 512-d embedding, top_k 10) at several connection counts:
   requests/s, p50/p99 latency, non-2xx and socket errors, server RSS before and after.
2. ``POST /v1/locate`` with one small JPEG per request, tiny test CLIP model, 16 connections:
   requests/s with micro-batching (max batch 16, 2 ms window) vs without (max batch 1).

Everything runs on this machine (server and wrk share its cores): numbers are for the pair.
Writes ``benchmarks/results/api.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from common import ROOT, machine, photo_locations, run_cli, save, table

WRK_LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    """RSS of a process and all its descendants (uvicorn workers), MiB."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += rss_mib(int(child))
    return total


class Server:
    def __init__(self, index: Path, *extra: str):
        self.port = free_port()
        cmd = [sys.executable, "-m", "geoindex", "serve", "--index", str(index), "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.proc.stderr.read()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise SystemExit("server did not become ready in 300 s")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wrk(url: str, body: bytes, content_type: str, connections: int, seconds: int, threads: int = 1) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.bin"
        body_path.write_bytes(body)
        script = Path(tmp) / "post.lua"
        script.write_text(
            'local f = io.open("%s", "rb")\nwrk.method = "POST"\nwrk.body = f:read("*a")\nf:close()\n'
            'wrk.headers["Content-Type"] = "%s"\n'
            'local bad = 0\nfunction response(status, headers, body) if status >= 300 then bad = bad + 1 end end\n'
            'done = function(summary, latency, requests) io.write(string.format("NON2XX %%d\\n", summary.errors.status)) end\n'
            % (body_path, content_type))
        cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script), url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    lat = {p: float(v) * {"us": 1e-3, "ms": 1.0, "s": 1000.0}[u] for p, v, u in WRK_LATENCY.findall(out)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(x) for x in sock.groups()) if sock else 0
    non2xx = int(re.search(r"NON2XX (\d+)", out).group(1)) if "NON2XX" in out else 0
    return {"connections": connections, "seconds": seconds, "requests": total, "requests_per_s": round(rps, 1),
            "p50_ms": lat.get("50"), "p90_ms": lat.get("90"), "p99_ms": lat.get("99"),
            "errors": non2xx + socket_errors}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=Path, default=ROOT / "indexes" / "res5-land")
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--connections", type=int, nargs="+", default=[4, 8, 16, 64])
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers (2 = one per core here)")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("bench_api needs wrk: apt-get install wrk")
    if not (args.index / "manifest.json").exists():
        print(f"building {args.index} (res 5 land, ~2.5 min)")
        _, proc = run_cli(["-m", "build_index", "--resolution", "5", "--out", str(args.index), "-q", "--no-progress"])
        if proc.returncode:
            raise SystemExit(proc.stderr)

    sys.path.insert(0, str(ROOT))
    from geoindex.encoders.location import encode_latlng, load_location_encoder

    emb = encode_latlng(load_location_encoder(), photo_locations(1, seed=3))
    body = json.dumps({"embeddings": emb.tolist(), "top_k": 10}).encode()
    result = {"machine": machine(), "index": str(args.index), "workers": args.workers, "embedding": [], "images": []}

    server = Server(args.index, "--embeddings-only", "--workers", str(args.workers))
    try:
        pid = server.proc.pid
        wrk(server.url("/v1/locate/embedding"), body, "application/json", 4, 3)  # warm-up
        rss_before = rss_mib(pid)
        for c in args.connections:
            row = wrk(server.url("/v1/locate/embedding"), body, "application/json", c, args.seconds)
            result["embedding"].append(row)
            print(table([row], list(row)))
        result["server_rss_mib"] = {"before": round(rss_before, 1), "after": round(rss_mib(pid), 1)}
        result["metrics_sample"] = urllib.request.urlopen(server.url("/metrics")).read().decode()[:1500]
    finally:
        server.stop()

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(buf, "JPEG")
    boundary = "geoindexbench"
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.jpg\"\r\n"
                 f"Content-Type: image/jpeg\r\n\r\n").encode() + buf.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    for label, extra in (("no batching (max batch 1)", ["--max-batch", "1", "--batch-window-ms", "0"]),
                         ("micro-batching (max batch 16, 2 ms)", ["--max-batch", "16", "--batch-window-ms", "2"])):
        server = Server(args.index, "--clip-model", "tiny-test", *extra)
        try:
            wrk(server.url("/v1/locate"), multipart, f"multipart/form-data; boundary={boundary}", 4, 3)
            row = {"mode": label, **wrk(server.url("/v1/locate"), multipart,
                                        f"multipart/form-data; boundary={boundary}", 16, args.seconds)}
            result["images"].append(row)
            print(table([row], list(row)))
        finally:
            server.stop()
    if len(result["images"]) == 2:
        result["micro_batching_speedup"] = round(result["images"][1]["requests_per_s"] / result["images"][0]["requests_per_s"], 2)
        print(f"micro-batching speed-up: {result['micro_batching_speedup']}x")
    print(f"saved {save('api.json', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
