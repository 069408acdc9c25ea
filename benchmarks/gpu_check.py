"""The GPU check (issue 36): what one GPU does for the photo path, in <= 8 minutes, with only torch
(CUDA) and onnxruntime on the machine; every other package is optional and its part is skipped,
with the reason, when it is missing. Results: benchmarks/results/gpu.json.

1. ``tower``: a ViT-L/14-shape image tower + GeoCLIP-shape head (pure torch, random weights:
   open_clip need not be installed; the compute does not depend on the values), fp16, attention
   through ``scaled_dot_product_attention``: photos/s at batch 64 and 256 (median of timed runs
   after warm-up), and CUDA graphs at the same batches where they capture.
2. ``search``: exact top-10 of a res-5-sized gallery (594,367 x 512) held as fp16 on the GPU
   (torch matmul + topk), batch 1 and 1,000 queries, against FAISS CPU ``IndexFlatIP`` (fp32,
   every core) when faiss is installed, with the fp16 top-10's recall against it.
3. ``archive``: ``geoindex locate DIR --out results.parquet`` end to end with CUDA encoding
   (ViT-L-14-random) when geoindex's own dependencies are there (faiss, h3, duckdb, open_clip).

Without CUDA it writes ``status: "not run"`` and the reason (no figure at all), unless
``--dry-run``: tiny shapes on the CPU, to check the script itself (the tests run that).

    bash benchmarks/gpu_check.sh                 # on the GPU machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RES5_LAND_CELLS = 594_367  # `geoindex build --resolution 5` (land)
VIT_L14 = {"width": 1024, "layers": 24, "heads": 16, "patch": 14, "image": 224, "features": 768}
TINY = {"width": 64, "layers": 2, "heads": 2, "patch": 16, "image": 64, "features": 768}


DISTRIBUTIONS = {"torch": "torch", "onnxruntime": "onnxruntime", "faiss": "faiss-cpu", "h3": "h3", "duckdb": "duckdb",
                 "open_clip": "open_clip_torch", "pyarrow": "pyarrow", "numpy": "numpy", "PIL": "pillow"}


def versions() -> dict:
    """Installed versions (from package metadata: nothing imported), "absent" where not installed."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for module, dist in DISTRIBUTIONS.items():
        try:
            out[module] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[module] = "absent"
    if out["faiss"] == "absent":
        try:
            out["faiss"] = metadata.version("faiss-gpu-cu12")
        except metadata.PackageNotFoundError:
            pass
    return out


def vit(shape: dict):
    """An open_clip-shaped ViT image tower + GeoCLIP-shaped head in plain torch: pixels -> (n, 512)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    w, h = shape["width"], shape["heads"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(w), nn.LayerNorm(w)
            self.qkv, self.out = nn.Linear(w, 3 * w), nn.Linear(w, w)
            self.fc, self.proj = nn.Linear(w, 4 * w), nn.Linear(4 * w, w)

        def forward(self, x):
            n, t, _ = x.shape
            q, k, v = self.qkv(self.ln_1(x)).view(n, t, 3, h, w // h).permute(2, 0, 3, 1, 4)
            x = x + self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, w))
            y = self.fc(self.ln_2(x))
            return x + self.proj(y * torch.sigmoid(1.702 * y))  # quick_gelu, as OpenAI's CLIP

    class Tower(nn.Module):
        def __init__(self):
            super().__init__()
            grid = shape["image"] // shape["patch"]
            self.conv = nn.Conv2d(3, w, shape["patch"], shape["patch"], bias=False)
            self.cls = nn.Parameter(torch.randn(w) * 0.02)
            self.pos = nn.Parameter(torch.randn(grid * grid + 1, w) * 0.01)
            self.ln_pre, self.ln_post = nn.LayerNorm(w), nn.LayerNorm(w)
            self.blocks = nn.Sequential(*[Block() for _ in range(shape["layers"])])
            self.proj = nn.Linear(w, shape["features"], bias=False)
            f = shape["features"]
            self.head = nn.Sequential(nn.Linear(f, f), nn.ReLU(), nn.Linear(f, 512))

        def forward(self, pixels):
            x = self.conv(pixels).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(len(x), 1, -1).to(x.dtype), x], 1) + self.pos.to(x.dtype)
            x = self.ln_post(self.blocks(self.ln_pre(x))[:, 0])
            return F.normalize(self.head(self.proj(x)).float(), dim=1)

    return Tower()


def timed(fn, sync, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def check_tower(device, shape: dict, batches: list[int], repeats: int) -> dict:
    import torch

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = vit(shape).to(device, dtype).eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, shape["image"], shape["image"], device=device, dtype=dtype)
        with torch.inference_mode():
            for _ in range(2):
                model(x)
            s = timed(lambda: model(x), sync, repeats)
        row = {"batch": batch, "dtype": str(dtype).replace("torch.", ""), "attention": "sdpa",
               "photos_per_s": batch / s, "ms_per_photo": 1e3 * s / batch, "repeats": repeats}
        if device.type == "cuda":
            row["cuda_graph"] = cuda_graph(model, x, sync, repeats)
        rows.append(row)
        del x
    return {"status": "run", "shape": shape, "rows": rows}


def cuda_graph(model, x, sync, repeats: int) -> dict:
    import torch

    try:
        with torch.inference_mode():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    model(x)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                model(x)
            s = timed(graph.replay, sync, repeats)
        return {"photos_per_s": len(x) / s, "ms_per_photo": 1e3 * s / len(x)}
    except Exception as e:  # noqa: BLE001
        return {"status": "failed", "reason": f"{type(e).__name__}: {str(e)[:200]}"}


def check_search(device, n: int, queries: int, repeats: int) -> dict:
    import numpy as np
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    xb = torch.nn.functional.normalize(torch.randn(n, 512, device=device, generator=g), dim=1).to(dtype)
    xq = torch.nn.functional.normalize(torch.randn(queries, 512, device=device, generator=g), dim=1).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def search(q):
        return torch.topk(q @ xb.T, 10, dim=1)

    with torch.inference_mode():
        search(xq[:1])
        one = timed(lambda: search(xq[:1]), sync, repeats)
        many = timed(lambda: search(xq), sync, repeats)
        _, ids = search(xq)
    out = {"status": "run", "gallery": n, "dim": 512, "store": str(dtype).replace("torch.", ""), "k": 10,
           "torch_batch1_ms": 1e3 * one, "torch_per_query_ms_at_batch": 1e3 * many / queries,
           "batch": queries}
    try:
        import faiss
    except ImportError as e:
        out["faiss_cpu"] = {"status": "skipped", "reason": f"faiss not installed ({e})"}
        return out
    base = xb.float().cpu().numpy()
    qs = xq.float().cpu().numpy()
    index = faiss.IndexFlatIP(512)
    index.add(base)
    index.search(qs[:1], 10)
    t1 = statistics.median(_time(lambda: index.search(qs[:1], 10)) for _ in range(repeats))
    tb = statistics.median(_time(lambda: index.search(qs, 10)) for _ in range(repeats))
    _, exact = index.search(qs, 10)
    got = ids.cpu().numpy()
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)]))
    out["faiss_cpu"] = {"status": "run", "threads": faiss.omp_get_max_threads(), "batch1_ms": 1e3 * t1,
                        "per_query_ms_at_batch": 1e3 * tb / queries, "gpu_fp16_recall_at_10": recall}
    return out


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def check_archive(photos: int, model: str, device: str, budget_s: float) -> dict:
    """``geoindex locate DIR --out`` end to end, when geoindex's dependencies are installed."""
    have = versions()
    missing = [m for m in ("faiss", "h3", "duckdb", "open_clip", "pyarrow") if have[m] == "absent"]
    if missing:
        return {"status": "skipped", "reason": f"not installed here: {', '.join(missing)}"}
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        for i in range(photos):
            Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(tmp / f"p{i:04d}.jpg")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        build = [sys.executable, "-m", "geoindex", "build", "--resolution", "1", "--out", str(tmp / "idx")]
        subprocess.run(build, check=True, env=env, capture_output=True, timeout=budget_s)
        cmd = [sys.executable, "-m", "geoindex", "locate", str(tmp), "--index", str(tmp / "idx"), "--out",
               str(tmp / "out.parquet"), "--clip-model", model, "--device", device, "--batch-size", "64",
               "--no-progress"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=budget_s)
        wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"status": "failed", "reason": proc.stderr.strip()[-300:]}
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"status": "run", "photos": photos, "model": model, "device": device, "wall_s": wall,
            "photos_per_s_after_load": summary.get("photos_per_s"), "summary": summary}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: checks the script, measures nothing")
    p.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    p.add_argument("--batches", default="64,256")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--archive-photos", type=int, default=512)
    args = p.parse_args(argv)
    import torch

    started = time.perf_counter()
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
              "versions": versions(), "command": "bash benchmarks/gpu_check.sh"}
    if not torch.cuda.is_available() and not args.dry_run:
        result.update(status="not run", reason="torch sees no CUDA device on this machine: run "
                      "`bash benchmarks/gpu_check.sh` on a GPU machine (one H100: <= 8 minutes)")
        return _write(args.out, result)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    result["status"] = "dry run (CPU, tiny shapes: no figure)" if args.dry_run else "run"
    result["device"] = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    batches = [2, 4] if args.dry_run else [int(b) for b in args.batches.split(",")]
    repeats = 1 if args.dry_run else args.repeats
    parts = {"tower": lambda: check_tower(device, TINY if args.dry_run else VIT_L14, batches, repeats),
             "search": lambda: check_search(device, 2000 if args.dry_run else RES5_LAND_CELLS,
                                            8 if args.dry_run else 1000, repeats),
             "archive": lambda: ({"status": "skipped", "reason": "dry run"} if args.dry_run else
                                 check_archive(args.archive_photos, "ViT-L-14-random", "cuda", 240))}
    for name, part in parts.items():
        t = time.perf_counter()
        try:
            result[name] = part()
        except Exception as e:  # noqa: BLE001 -- one part failing must not lose the others
            result[name] = {"status": "failed", "reason": f"{type(e).__name__}: {str(e)[:300]}"}
        result[name]["seconds"] = time.perf_counter() - t
        print(name, json.dumps(result[name])[:400], flush=True)
        _write(args.out, result)
    result["seconds"] = time.perf_counter() - started
    return _write(args.out, result)


def _write(out: Path, result: dict) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
