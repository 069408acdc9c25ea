"""What a photo costs, and that geoindex's photo embedding is the reference's (results: images.json).

ViT-L/14 with random weights (the real ones cannot be downloaded here), saved as a transformers
folder by ``CLIPModel.save_pretrained``, read by geoindex as ``--clip-checkpoint`` and, placed as
``models--openai--clip-vit-large-patch14`` in an offline hub cache, with no flag at all. Measured:

* ``parity``: cosine and max |difference| of geoindex's embeddings against the reference GeoCLIP
  path (CLIPImageProcessor -> CLIPModel.get_image_features -> released MLP head) on Kauai.png and
  odd-size photos; also for the alternative design (the HF weights mapped into open_clip's model).
* ``throughput``: photos/s of the image tower at batch 1, 8, 32 on the CPU, fp32 (median of repeats).
* ``preprocess``: decode + preprocess milliseconds per photo (12 MP and 1 MP JPEGs), as a share.
* ``limit``: this CPU's sgemm GFLOP/s and the model's FLOPs a photo: the fastest fp32 can be.
* ``locate``: ``geoindex locate`` end to end on N photos: model load, image tower, and the share of
  everything else (decode, preprocess, head, search, output).
* ``onnxruntime``: the same tower exported to ONNX and run by ONNX Runtime (fp32), when installed.

    nice python benchmarks/bench_images.py            # ~15 min on 2 cores
    python benchmarks/bench_images.py --quick         # fewer repeats, no locate/ONNX
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, save, table
from common import median_of as timed

from geoindex.encoders import reference as ref
from geoindex.encoders.clip import load_image_encoder
from geoindex.encoders.images import ClipPreprocess, load_image
from torch import nn


def hub_cache(folder: Path, root: Path) -> Path:
    """An offline hub cache holding ``folder`` as openai/clip-vit-large-patch14 (symlinks, as the hub's)."""
    snap = root / "models--openai--clip-vit-large-patch14" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).symlink_to(f.resolve())
    (root / "models--openai--clip-vit-large-patch14" / "refs").mkdir()
    (root / "models--openai--clip-vit-large-patch14" / "refs" / "main").write_text("0123abc")
    return root


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    seconds, _ = timed(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / seconds / 1e9


def model_gflop(clip) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        clip.encode_image(torch.zeros(1, 3, 224, 224))
    return counter.get_total_flops() / 1e9


def mapped_open_clip(model):
    """The alternative design: the HF vision tower's weights mapped into open_clip's VisionTransformer."""
    import torch
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    vc = model.config.vision_config
    cfg = CLIPVisionCfg(layers=vc.num_hidden_layers, width=vc.hidden_size, head_width=vc.hidden_size // vc.num_attention_heads,
                        mlp_ratio=vc.intermediate_size / vc.hidden_size, patch_size=vc.patch_size, image_size=vc.image_size)
    visual = _build_vision_tower(model.config.projection_dim, cfg, quick_gelu=vc.hidden_act == "quick_gelu")
    sd, p = model.state_dict(), "vision_model."
    out = {"class_embedding": sd[p + "embeddings.class_embedding"],
           "positional_embedding": sd[p + "embeddings.position_embedding.weight"],
           "conv1.weight": sd[p + "embeddings.patch_embedding.weight"],
           "ln_pre.weight": sd[p + "pre_layrnorm.weight"], "ln_pre.bias": sd[p + "pre_layrnorm.bias"],
           "ln_post.weight": sd[p + "post_layernorm.weight"], "ln_post.bias": sd[p + "post_layernorm.bias"],
           "proj": sd["visual_projection.weight"].T.contiguous()}
    for i in range(vc.num_hidden_layers):
        h, o = f"{p}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        out[o + "attn.in_proj_weight"] = torch.cat([sd[h + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        out[o + "attn.in_proj_bias"] = torch.cat([sd[h + f"self_attn.{x}_proj.bias"] for x in "qkv"])
        for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                     ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            out[o + a + ".weight"], out[o + a + ".bias"] = sd[h + b + ".weight"], sd[h + b + ".bias"]
    visual.load_state_dict(out)
    return visual.eval().requires_grad_(False)


def embed_with(encode_image, head, pixels):
    import torch

    with torch.inference_mode():
        return torch.nn.functional.normalize(head(encode_image(pixels)), dim=1).numpy()


def bench_parity(work: Path, folder: Path, photos: list[Path], model) -> tuple[list[dict], object]:
    import torch

    rows = []
    xr = ref.reference_embeddings(model, photos)
    enc = load_image_encoder("ViT-L-14", checkpoint=folder, device="cpu")
    images = [load_image(p) for p in photos]
    xq = enc.encode_images(images)
    rows.append({"path": "geoindex, --clip-checkpoint FOLDER (transformers CLIPModel)", **ref.agreement(xq, xr)})
    pixels = torch.stack([enc.preprocess(im) for im in images])
    visual = mapped_open_clip(model)
    rows.append({"path": "alternative: weights mapped into open_clip", **ref.agreement(
        embed_with(visual, enc.head, pixels), xr)})
    del visual
    env = {"HF_HUB_CACHE": str(hub_cache(folder, work / "hub")), "HF_HUB_OFFLINE": "1"}
    saved = {k: os.environ.get(k) for k in (*env, "GEOINDEX_CLIP_CHECKPOINT")}
    os.environ.update(env)
    os.environ.pop("GEOINDEX_CLIP_CHECKPOINT", None)
    try:
        del enc
        gc.collect()
        enc = load_image_encoder("ViT-L-14", device="cpu")
        rows.append({"path": "geoindex, no flag: hub cache (HF_HUB_OFFLINE=1)",
                     **ref.agreement(enc.encode_images(images), xr)})
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return rows, enc


def bench_throughput(enc, repeats: dict[int, int]) -> list[dict]:
    import torch

    rows = []
    for batch, n in repeats.items():
        x = torch.randn(batch, 3, 224, 224)
        with torch.inference_mode():
            enc.clip.encode_image(x[:1])
            seconds, _ = timed(lambda: enc.clip.encode_image(x), n)
        rows.append({"batch": batch, "repeats": n, "s_per_batch": seconds, "photos_per_s": batch / seconds,
                     "ms_per_photo": 1000 * seconds / batch})
    return rows


def bench_preprocess(work: Path) -> list[dict]:
    from PIL import Image

    rows, pre = [], ClipPreprocess()
    rng = np.random.default_rng(1)
    for label, (w, h) in (("12 MP JPEG (4032x3024)", (4032, 3024)), ("1 MP JPEG (1023x769)", (1023, 769))):
        small = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        path = work / f"p{w}.jpg"
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(path, quality=90)
        decode, _ = timed(lambda: load_image(path), 5)
        both, _ = timed(lambda: pre(load_image(path)), 5)
        rows.append({"photo": label, "decode_ms": 1000 * decode, "decode_preprocess_ms": 1000 * both})
    return rows


def bench_locate(work: Path, folder: Path, photos: list[Path], n: int = 10) -> dict:
    """``geoindex locate`` (its ``main``, in this process) on ``n`` photos, the model load, the CLIP
    image tower and everything else (decode, preprocess, head, search, output) timed apart."""
    import contextlib
    import io

    import geoindex.encoders.clip as clip_module
    from geoindex.cli.build import main as build
    from geoindex.cli.locate import main as locate
    from geoindex.encoders.hf_clip import HFClip

    index = work / "idx-r2"
    build(["--resolution", "2", "--out", str(index), "--no-progress", "-q"])
    spent = {"load": 0.0, "tower": 0.0}
    loader, tower = clip_module.load_image_encoder, HFClip.encode_image

    def timed_load(*a, **k):
        t = time.perf_counter()
        try:
            return loader(*a, **k)
        finally:
            spent["load"] += time.perf_counter() - t

    def timed_tower(self, pixels):
        t = time.perf_counter()
        try:
            return tower(self, pixels)
        finally:
            spent["tower"] += time.perf_counter() - t

    clip_module.load_image_encoder, HFClip.encode_image = timed_load, timed_tower
    argv = [*map(str, (photos * 4)[:n]), "--index", str(index), "--format", "json", "--clip-checkpoint", str(folder),
            "--device", "cpu"]
    try:
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = locate(argv)
        total = time.perf_counter() - t
    finally:
        clip_module.load_image_encoder, HFClip.encode_image = loader, tower
    if code != 0 or len(json.loads(out.getvalue())) != n:
        raise RuntimeError(f"geoindex locate exited {code}")
    rest = total - spent["load"] - spent["tower"]
    return {"photos": n, "index": "res 2 land (built here)", "total_s": total, "model_load_s": spent["load"],
            "image_tower_s": spent["tower"], "everything_else_s": rest,
            "everything_else_share": rest / (total - spent["load"])}


def bench_onnx(work: Path, enc, repeats: int, batches: list[int]) -> dict:
    import torch

    try:
        import onnxruntime as ort
    except ImportError as e:
        return {"skipped": f"onnxruntime not installed ({e})"}
    path = work / "vision.onnx"
    try:
        torch.onnx.export(_Tower(enc.clip), (torch.zeros(1, 3, 224, 224),),
                          str(path), input_names=["pixels"], output_names=["features"],
                          dynamic_axes={"pixels": {0: "n"}, "features": {0: "n"}}, dynamo=False)
    except Exception as e:  # exporter versions differ: record why
        return {"skipped": f"export failed: {type(e).__name__}: {str(e)[:200]}"}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, 224, 224)
        ours = session.run(None, {"pixels": x.numpy()})[0]
        with torch.inference_mode():
            theirs = enc.clip.encode_image(x).numpy()
            torch_s, _ = timed(lambda: enc.clip.encode_image(x), repeats)
        ort_s, _ = timed(lambda: session.run(None, {"pixels": x.numpy()}), repeats)
        rows.append({"batch": batch, "torch_s": torch_s, "ort_s": ort_s, "speedup": torch_s / ort_s,
                     **ref.agreement(ours, theirs)})
    return {"version": ort.__version__, "rows": rows}


class _Tower(nn.Module):
    """The image tower alone, as a module the ONNX exporter can trace."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, pixels):
        return self.clip.encode_image(pixels)


BUSY_NOTE = ("measured on a shared, busy machine (2 cores, several other engineers' jobs running): absolute times "
             "are inflated and noisy; speedup_vs_torch compares rounds interleaved in the same run (medians)")


def bench_backends(args) -> dict:
    """torch, onnx (fp32) and onnx-int8 image tower + head, interleaved rounds: one call of every
    (backend, batch) a round, medians over rounds; cosine of each against torch fp32 on the same pixels."""
    import statistics

    import torch

    from geoindex.encoders import onnx_int8, onnx_tower

    os.environ.setdefault(onnx_tower.CACHE_ENV, tempfile.mkdtemp(prefix="bench-images-cache-"))
    t = time.perf_counter()
    enc = load_image_encoder(args.model, device="cpu", backend="torch")
    load_s = time.perf_counter() - t
    module = onnx_tower.TowerHead(enc.clip, enc.head).eval()
    t = time.perf_counter()
    fp32 = onnx_tower.load_tower(enc.clip, enc.head, args.model, enc.preprocess.size)
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    int8 = onnx_int8.int8_tower(fp32)
    quantize_s = time.perf_counter() - t
    batches = [int(b) for b in args.batches.split(",")]
    size = enc.preprocess.size
    pixels = {b: torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(b)) for b in batches}

    def run_torch(x):
        with torch.inference_mode():
            return module(x).numpy()

    runs = {"torch": run_torch, "onnx": lambda x: fp32(x.numpy()), "onnx-int8": lambda x: int8(x.numpy())}
    precision = {"torch": "fp32", "onnx": "fp32", "onnx-int8": "int8"}
    reference = {b: run_torch(pixels[b]) for b in batches}
    cosine = {(name, b): onnx_tower.agreement(fn(pixels[b]), reference[b]) for name, fn in runs.items() for b in batches}
    times: dict = {(name, b): [] for name in runs for b in batches}
    for r in range(args.rounds):
        for b in batches:
            for name, fn in runs.items():
                t = time.perf_counter()
                fn(pixels[b])
                times[name, b].append(time.perf_counter() - t)
        print(f"round {r + 1}/{args.rounds}:", {f"{k[0]}@{k[1]}": round(v[-1] / k[1], 3) for k, v in times.items()},
              flush=True)
    rows = []
    for b in batches:
        torch_s = statistics.median(times["torch", b]) / b
        for name in runs:
            s = statistics.median(times[name, b]) / b
            rows.append({"backend": name, "precision": precision[name], "batch": b, "s_per_photo": s,
                         "speedup_vs_torch": torch_s / s, "cosine_min": cosine[name, b]["cosine_min"],
                         "max_abs_diff": cosine[name, b]["max_abs_diff"], "rounds": args.rounds,
                         "seconds_per_round": times[name, b]})
    return {"model": f"{args.model}: ViT-L/14 shape, random weights (compute does not depend on the values)",
            "threads": torch.get_num_threads(), "onnxruntime": onnx_tower.onnxruntime().__version__,
            "opset": onnx_tower.OPSET, "model_load_s": load_s, "export_and_check_s": export_s,
            "export_check": fp32.record.get("check"), "auto_timing": fp32.record.get("timing"), "quantize_s": quantize_s,
            "int8_ops": onnx_int8.OP_TYPES, "note": BUSY_NOTE if args.busy else "quiet machine", "rows": rows}


def main_backends(args) -> None:
    """``--backends``: the rows of images.json's ``backends`` section, the rest of the file kept."""
    import torch

    from common import RESULTS

    path = RESULTS / args.out
    result = json.loads(path.read_text()) if path.is_file() else {}
    section = bench_backends(args)
    section["machine"] = {**machine(), "torch_threads": torch.get_num_threads(),
                          "load_average": os.getloadavg(), "note": section["note"]}
    result["backends"] = section
    print(table(section["rows"], ["backend", "precision", "batch", "s_per_photo", "speedup_vs_torch", "cosine_min"]))
    print("wrote", save(args.out, result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", action="store_true",
                   help="only the backend rows (torch, onnx, onnx-int8 at --batches), interleaved; keeps the rest")
    p.add_argument("--model", default="ViT-L-14-random", help="--backends: the CLIP model (default ViT-L-14-random)")
    p.add_argument("--batches", default="1,8", help="--backends: batch sizes (default 1,8)")
    p.add_argument("--rounds", type=int, default=3, help="--backends: interleaved rounds (default 3)")
    p.add_argument("--busy", action="store_true", help="--backends: label the rows as measured on a busy machine")
    p.add_argument("--quick", action="store_true", help="fewer repeats; no locate, no ONNX")
    p.add_argument("--out", default="images.json")
    p.add_argument("--repeats", type=int, default=3, help="timed runs a batch size (batch 32: one fewer)")
    p.add_argument("--onnx-batches", default="1,8", help="batch sizes ONNX Runtime is timed at")
    p.add_argument("--locate-photos", type=int, default=10)
    args = p.parse_args()
    if args.backends:
        return main_backends(args)
    import torch

    repeats = {1: 2, 8: 1, 32: 1} if args.quick else {1: args.repeats, 8: args.repeats, 32: max(1, args.repeats - 1)}
    result = {"machine": {**machine(), "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.is_available(),
                          "note": "2 cores shared with other jobs while measured: medians, ratios side by side"},
              "model": "ViT-L/14 shape (GeoCLIP's CLIPConfig), random weights, fp32, CPU",
              "gpu_rows": "none: no GPU on this machine" if not torch.cuda.is_available() else "not measured"}
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        work = Path(tmp)
        model = ref.random_clip("vit-l-14", seed=0)
        folder = work / "clip-vit-l-14"
        model.save_pretrained(folder)
        photos = ref.write_parity_photos(work / "photos")
        result["parity"], enc = bench_parity(work, folder, photos, model)
        print(table(result["parity"], ["path", "n", "cosine_min", "max_abs_diff"]))
        save(args.out, result)  # a part at a time: a long run interrupted keeps what it measured
        del model
        gc.collect()
        result["gflop_per_photo"] = model_gflop(enc.clip)
        result["sgemm_gflops"] = sgemm_gflops()
        result["throughput"] = bench_throughput(enc, repeats)
        b1 = result["throughput"][0]["ms_per_photo"]
        limit_ms = 1000 * result["gflop_per_photo"] / result["sgemm_gflops"]
        result["limit"] = {"ms_per_photo": limit_ms, "measured_batch1_over_limit": b1 / limit_ms,
                           "best_batch_over_limit": min(r["ms_per_photo"] for r in result["throughput"]) / limit_ms}
        print(table(result["throughput"], ["batch", "photos_per_s", "ms_per_photo"]))
        print(f"{result['gflop_per_photo']:.1f} GFLOP/photo, sgemm {result['sgemm_gflops']:.0f} GFLOP/s -> "
              f"limit {limit_ms:.0f} ms/photo; batch 1 is {b1 / limit_ms:.2f}x the limit")
        save(args.out, result)
        result["preprocess"] = bench_preprocess(work)
        for row in result["preprocess"]:
            row["share_of_batch1_photo"] = row["decode_preprocess_ms"] / (row["decode_preprocess_ms"] + b1)
        print(table(result["preprocess"], ["photo", "decode_ms", "decode_preprocess_ms", "share_of_batch1_photo"]))
        save(args.out, result)
        if not args.quick:
            result["onnxruntime"] = bench_onnx(work, enc, args.repeats,
                                               [int(b) for b in args.onnx_batches.split(",")])
            print(result["onnxruntime"])
            save(args.out, result)
            del enc
            gc.collect()
            result["locate"] = bench_locate(work, folder, photos, args.locate_photos)
            print(result["locate"])
    print("wrote", save(args.out, result))


if __name__ == "__main__":
    main()
