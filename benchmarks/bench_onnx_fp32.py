"""Which ONNX Runtime fp32 settings make the image tower fastest, against torch (results: onnx_fp32.json).

Issue 36 asks ONNX Runtime fp32 at batch 1 to be >= 1.5x torch. This script tries what could get
there, each variant against torch in the same process, interleaved (one call of every variant and
batch a round, medians over rounds), each checked against torch (cosine min, max abs diff):

* ``onnx``: the export and session as geoindex had them before this script (opset 17, dynamic
  batch, ORT_ENABLE_ALL, 2 threads, idle threads spinning);
* ``onnx-nospin``: the same graph, ``session.intra_op.allow_spinning = 0`` (what geoindex uses now);
* ``onnx-fused``: the graph after ``onnxruntime.transformers.optimizer.optimize_model`` (model_type
  ``vit``, num_heads/hidden_size of the tower; fused operator counts recorded);
* ``onnx-static1``: exported with a fixed batch of 1 (every shape constant, folded), then fused;
  only timed at batch 1;
* ``onnx-parallel``: ORT_PARALLEL execution mode;
* ``onnx-opset18``: exported at opset 18 (dynamic batch).

Also (``load``): session load time of the raw graph against copies saved after ONNX Runtime's
basic and extended optimizations (``optimized_model_filepath``), warm, alternating; and the
ceiling: the tower's FLOPs a second in torch over torch's sgemm rate at the tower's MLP shape,
timed in the same round (no fp32 runtime beats the GEMMs it has to run by more than that).
Each run is a ``--group`` in the results; other groups are kept.

    python benchmarks/bench_onnx_fp32.py --busy --rounds 5 --variants onnx,onnx-fused,onnx-nospin --group b
    python benchmarks/bench_onnx_fp32.py --variants load --rounds 0 --work DIR --group load
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import machine, save, table

from geoindex.encoders import onnx_tower
from geoindex.encoders.clip import load_image_encoder

BUSY = ("shared, busy machine (2 cores, other engineers' jobs running): absolute times inflated and noisy; "
        "ratios compare rounds interleaved in the same process (medians)")


def session(path: Path, threads: int, spinning: bool = True, parallel: bool = False, save_to: Path | None = None,
            level: str = "ORT_ENABLE_ALL"):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if parallel:
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    if save_to is not None:
        opts.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def fuse(src: Path, dst: Path, heads: int, hidden: int) -> dict:
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(src), model_type="vit", num_heads=heads, hidden_size=hidden, opt_level=0)
    model.save_model_to_file(str(dst))
    stats = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    return {"fused": stats, "ops": dict(collections.Counter(n.op_type for n in model.model.graph.node).most_common(12))}


def export_static(module, path: Path, size: int, opset: int = onnx_tower.OPSET, dynamic: bool = False) -> None:
    import torch

    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    axes = {"pixels": {0: "n"}, "embeddings": {0: "n"}} if dynamic else None
    try:
        with torch.no_grad():
            torch.onnx.export(module, (onnx_tower.probe_pixels(size, 1),), str(path), input_names=["pixels"],
                              output_names=["embeddings"], opset_version=opset, dynamo=False, dynamic_axes=axes)
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


def gemm_ceiling(width: int, tokens: int, repeats: int = 3) -> dict:
    """torch's sgemm GFLOP/s at the tower's GEMM shapes (tokens x width x {3w, w, 4w} and back)."""
    import torch

    shapes = [(tokens, width, 3 * width), (tokens, width, width), (tokens, width, 4 * width), (tokens, 4 * width, width)]
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(5):
                torch.mm(a, b)
            ts.append((time.perf_counter() - t) / 5)
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / statistics.median(ts) / 1e9
    return out


def tower_gflop(enc, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel hides its projections from the counter
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            enc.clip.encode_image(torch.zeros(1, 3, size, size))
    finally:
        torch.backends.mha.set_fastpath_enabled(was)
    return counter.get_total_flops() / 1e9


VARIANTS = ("onnx", "onnx-nospin", "onnx-fused", "onnx-static1", "onnx-parallel", "onnx-opset18")


def load_times(raw: Path, work: Path, threads: int, repeats: int = 3) -> dict:
    """Session load seconds (warm page cache, alternating, medians) of the raw export against copies
    saved after ONNX Runtime's basic and extended graph optimizations (``optimized_model_filepath``)."""
    files = {"raw": raw}
    for level in ("basic", "extended"):
        files[level] = work / f"saved-{level}.onnx"
        if not files[level].exists():
            session(raw, threads, save_to=files[level], level=f"ORT_ENABLE_{level.upper()}")
    runs: dict = {k: [] for k in files}
    for _ in range(repeats):
        for name, path in files.items():
            t = time.perf_counter()
            session(path, threads)
            runs[name].append(time.perf_counter() - t)
    return {name: {"median_s": statistics.median(ts), "runs": ts} for name, ts in runs.items()}


def prepare(args, work: Path) -> tuple:
    """The encoder, torch module, and {variant: (session, batches)} plus what preparing them recorded.
    Graphs already in ``work`` (``--work``, an earlier run's) are reused."""
    import torch

    enc = load_image_encoder(args.model, device="cpu", backend="torch")
    module = onnx_tower.TowerHead(enc.clip, enc.head).eval()
    size, threads = enc.preprocess.size, torch.get_num_threads()
    visual = enc.clip.visual
    heads, hidden = visual.transformer.resblocks[0].attn.num_heads, visual.transformer.width
    notes: dict = {"heads": heads, "hidden": hidden}
    raw, fused, static, static_fused = (work / f"{n}.onnx" for n in ("raw", "fused", "static1", "static1-fused"))
    steps = [("export_s", raw, lambda: onnx_tower.export(module, raw, size)),
             ("optimizer_s", fused, lambda: notes.__setitem__("optimizer", fuse(raw, fused, heads, hidden))),
             ("export_static1_s", static, lambda: export_static(module, static, size)),
             ("export_opset18_s", work / "opset18.onnx",
              lambda: export_static(module, work / "opset18.onnx", size, opset=18, dynamic=True)),
             ("optimizer_static1_s", static_fused,
              lambda: notes.__setitem__("optimizer_static1", fuse(static, static_fused, heads, hidden)))]
    for name, path, step in steps:
        if not path.exists():
            t = time.perf_counter()
            step()
            notes[name] = time.perf_counter() - t
    if "load" in args.variants:
        notes["load_s"] = load_times(raw, work, threads)
    batches = [int(b) for b in args.batches.split(",")]
    make = {"onnx": lambda: (session(raw, threads), batches),
            "onnx-nospin": lambda: (session(raw, threads, spinning=False), batches),
            "onnx-fused": lambda: (session(fused, threads), batches),
            "onnx-static1": lambda: (session(static_fused, threads), [1]),
            "onnx-parallel": lambda: (session(raw, threads, parallel=True), batches),
            "onnx-opset18": lambda: (session(work / "opset18.onnx", threads), batches)}
    variants = {name: make[name]() for name in args.variants.split(",") if name in make}
    return enc, module, variants, batches, notes


def run(args) -> dict:
    import torch

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-onnx-fp32-"))
    enc, module, variants, batches, notes = prepare(args, work)
    size = enc.preprocess.size
    pixels = {b: torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(b)) for b in batches}

    def run_torch(x):
        with torch.inference_mode():
            return module(x).numpy()

    def ort_run(sess):
        return lambda x: sess.run(None, {"pixels": x.numpy()})[0]

    runs = {"torch": (run_torch, batches), **{name: (ort_run(sess), bs) for name, (sess, bs) in variants.items()}}
    tokens = (size // enc.clip.visual.patch_size[0]) ** 2 + 1
    a, w = torch.randn(tokens, notes["hidden"]), torch.randn(notes["hidden"], 4 * notes["hidden"])
    sgemm = []  # torch's sgemm GFLOP/s at the tower's MLP shape, once a round: the same load as the round
    if args.rounds == 0:
        return {"model": args.model, "notes": notes, "rows": []}
    for fn, bs in runs.values():  # warm-up: first runs allocate
        fn(pixels[1][:1])
    first: dict = {}
    times: dict = {(n, b): [] for n, (fn, bs) in runs.items() for b in bs}
    for r in range(args.rounds):
        for b in batches:
            for name, (fn, bs) in runs.items():
                if b in bs:
                    t = time.perf_counter()
                    first.setdefault((name, b), fn(pixels[b]))
                    times[name, b].append(time.perf_counter() - t)
        torch.mm(a, w)  # wakes torch's threads after ONNX Runtime's runs
        t = time.perf_counter()
        for _ in range(10):
            torch.mm(a, w)
        sgemm.append(10 * 2 * a.shape[0] * a.shape[1] * w.shape[1] / (time.perf_counter() - t) / 1e9)
        print(f"round {r + 1}/{args.rounds}, load {os.getloadavg()[0]:.1f}:",
              {f"{k[0]}@{k[1]}": round(v[-1] / k[1], 2) for k, v in times.items()}, flush=True)
    rows = []
    for (name, b), ts in times.items():
        s, torch_s = statistics.median(ts) / b, statistics.median(times["torch", b]) / b
        rows.append({"variant": name, "batch": b, "s_per_photo": s, "speedup_vs_torch": torch_s / s,
                     **onnx_tower.agreement(first[name, b], first["torch", b]), "seconds_per_round": ts})
    gflop = tower_gflop(enc, size)
    per_round = [gflop / t * 1 / g for t, g in zip(times.get(("torch", 1), []), sgemm)]
    notes["ceiling"] = {
        "tower_gflop_per_photo": gflop, "sgemm_gflops_per_round": sgemm,
        "sgemm_gflops_at_tower_shapes": gemm_ceiling(notes["hidden"], tokens),
        "torch_batch1_share_of_sgemm_per_round": per_round,
        "torch_batch1_share_of_sgemm": statistics.median(per_round) if per_round else None,
        "best_possible_speedup_at_batch1": 1 / statistics.median(per_round) if per_round else None}
    return {"model": args.model, "threads": torch.get_num_threads(), "rounds": args.rounds,
            "onnxruntime": onnx_tower.onnxruntime().__version__, "opset": onnx_tower.OPSET,
            "note": BUSY if args.busy else "quiet machine", "notes": notes, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="ViT-L-14-random")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", default="onnx,onnx-fused,load",
                   help=f"comma-separated, timed against torch: {', '.join(VARIANTS)}; load: session load times")
    p.add_argument("--work", default=None, help="folder of the graphs (reused when there, e.g. an earlier run's)")
    p.add_argument("--group", default="a", help="one interleaved run's name in the results (other groups kept)")
    p.add_argument("--busy", action="store_true", help="label the rows as measured on a busy machine")
    p.add_argument("--out", default="onnx_fp32.json")
    args = p.parse_args()
    path = Path(__file__).parent / "results" / args.out
    saved = json.loads(path.read_text()) if path.is_file() else {}
    result = run(args)
    result["machine"] = {**machine(), "load_average": os.getloadavg()}
    saved.setdefault("groups", {})[args.group] = result
    if result["rows"]:
        print(table(result["rows"], ["variant", "batch", "s_per_photo", "speedup_vs_torch", "cosine_min", "max_abs_diff"]))
    print({k: v for k, v in result["notes"].items() if k != "optimizer"})
    print("wrote", save(args.out, saved))


if __name__ == "__main__":
    main()
