"""Does the server give memory back after large uploads, and does a budget hold it down? (issue 29)

Starts ``geoindex serve --clip-model tiny-test`` (image routes on, a random tiny CLIP: decoding is
what is measured, not the model) on ``--index``, reads its ``/proc`` RSS, then sends ``--requests``
multipart requests of ``--images`` PNGs of ``--side`` x ``--side`` pixels (each ~16x compressible,
so a few MB on the wire and ``side**2 * 4`` bytes decoded), one after another, sampling RSS while
they run. Reports RSS idle, peak and after (flat: after within 10 % of the RSS after the first
request, once the server's own one-off allocations are done), and what the issue's request (16
PNGs of 7999x7999) gets. Results: results/upload_memory.json.
"""

from __future__ import annotations

import argparse
import io
import threading
import time
from pathlib import Path

import numpy as np
from bench_api import Server
from common import machine, save, table
from PIL import Image


def png(side: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = (rng.random((side // 16, side // 16, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((side, side), Image.NEAREST).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(url: str, images: list[bytes]) -> tuple[int, str]:
    import httpx

    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    r = httpx.post(url, files=files, timeout=900)
    return r.status_code, r.text[:300]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=Path, required=True, help="any index folder (res 2 is enough)")
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--side", type=int, default=4000, help="PNG side in pixels (4000: 64 MB decoded each)")
    p.add_argument("--max-decoded-bytes", type=int, default=2**30)
    p.add_argument("--server-decoded-bytes", type=int, default=2**30)
    args = p.parse_args(argv)
    limits = ["--max-decoded-bytes", str(args.max_decoded_bytes), "--server-decoded-bytes",
              str(args.server_decoded_bytes), "--max-images", str(max(16, args.images)),
              "--max-request-bytes", str(1 << 30), "--max-upload-bytes", str(256 << 20)]
    server = Server(args.index, "--clip-model", "tiny-test", *limits)
    pid, url = server.proc.pid, server.url("/v1/locate")
    peak, stop = [0.0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib(pid))
            time.sleep(0.05)

    rows = []
    try:
        images = [png(args.side, seed) for seed in range(args.images)]
        idle = rss_mib(pid)
        threading.Thread(target=sample, daemon=True).start()
        seconds, statuses, after = [], [], []
        for _ in range(args.requests):
            t = time.perf_counter()
            status, text = post(url, images)
            seconds.append(time.perf_counter() - t)
            statuses.append(status)
            after.append(rss_mib(pid))
            if status != 200:
                print("refused:", text)
        rows.append({"request": f"{args.images} PNGs {args.side}x{args.side}", "requests": args.requests,
                     "status": sorted(set(statuses)), "decoded_mib_per_request": round(
                         args.images * args.side ** 2 * 4 / 2**20), "idle_rss_mib": round(idle),
                     "after_first_mib": round(after[0]), "after_last_mib": round(after[-1]),
                     "peak_rss_mib": round(peak[0]), "growth_first_to_last": round(after[-1] / after[0] - 1, 3),
                     "s_per_request_median": round(float(np.median(seconds)), 2)})
        bomb = [png(7999, seed) for seed in range(16)]
        before = rss_mib(pid)
        status, text = post(url, bomb)
        rows.append({"request": "16 PNGs 7999x7999 (the issue's)", "requests": 1, "status": [status],
                     "decoded_mib_per_request": round(16 * 7999 ** 2 * 4 / 2**20), "idle_rss_mib": round(before),
                     "after_last_mib": round(rss_mib(pid)), "peak_rss_mib": round(peak[0]), "message": text})
    finally:
        stop.set()
        server.stop()
    print(table(rows, ["request", "requests", "status", "decoded_mib_per_request", "idle_rss_mib",
                       "after_first_mib", "after_last_mib", "peak_rss_mib", "growth_first_to_last",
                       "s_per_request_median"]))
    save("upload_memory.json", {"machine": machine(), "shared_machine": True,
                                "params": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
