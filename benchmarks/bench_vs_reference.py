"""This project vs the reference GeoCLIP ``predict()``, per query, same machine, same run.

The reference (``geoclip.GeoCLIP``) runs its CLIP ViT-L/14 (Hugging Face), then re-encodes its
100K gallery and takes a softmax top-k, for every image. geoindex runs open_clip ViT-L/14 + the
same head, then one ANN search over a dense H3 index. Both use the same CLIP architecture: with
``--clip random`` (default here: no weights can be downloaded) both towers are randomly
initialised ViT-L/14s, so compute is real and outputs meaningless; on a machine with weights use
``--clip real`` (the reference downloads openai/clip-vit-large-patch14; geoindex uses open_clip's
OpenAI weights or ``--clip-checkpoint``). Reported: median seconds per image, end to end and
split into image encoding and the gallery/search step, and the speed-up.
Results: benchmarks/results/vs_reference.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, machine, run_cli, save, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", type=Path, default=ROOT / "indexes" / "res5-land")
    p.add_argument("--clip", choices=("random", "real"), default="random")
    p.add_argument("--clip-checkpoint", default=None)
    p.add_argument("--images", type=int, default=3)
    args = p.parse_args(argv)
    if not (args.index / "manifest.json").exists():
        _, proc = run_cli(["-m", "build_index", "--resolution", "5", "--out", str(args.index), "-q", "--no-progress"])
        if proc.returncode:
            raise SystemExit(proc.stderr)

    import torch
    from geoclip import GeoCLIP
    from PIL import Image

    from geoindex import Geolocator, QueryOptions
    from geoindex.encoders.clip import load_image_encoder
    from geoindex.encoders.images import load_image

    torch.manual_seed(0)
    reference = GeoCLIP(from_pretrained=True, clip_pretrained=args.clip == "real").eval()
    encoder = load_image_encoder("ViT-L-14" if args.clip == "real" else "ViT-L-14-random", args.clip_checkpoint,
                                 device="cpu", batch_size=1)
    geo = Geolocator(args.index)
    rng = np.random.default_rng(0)
    rows = {"reference_total": [], "reference_image": [], "reference_gallery": [],
            "geoindex_total": [], "geoindex_image": [], "geoindex_search": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.images):
            path = Path(tmp) / f"img{i}.jpg"
            Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path)
            t = time.perf_counter()
            reference.predict(str(path), top_k=5)
            rows["reference_total"].append(time.perf_counter() - t)
            with torch.no_grad():  # the same work, split: image tower, then the gallery step
                with Image.open(path) as im:
                    x = reference.image_encoder.preprocess_image(im.convert("RGB"))
                t = time.perf_counter()
                feats = reference.image_encoder(x)
                rows["reference_image"].append(time.perf_counter() - t)
                t = time.perf_counter()
                loc = torch.nn.functional.normalize(reference.location_encoder(reference.gps_gallery), dim=1)
                logits = reference.logit_scale.exp() * torch.nn.functional.normalize(feats, dim=1) @ loc.T
                torch.topk(logits.softmax(dim=-1), 5, dim=1)
                rows["reference_gallery"].append(time.perf_counter() - t)

            t = time.perf_counter()
            xq = encoder.encode_images([load_image(path)])
            t_img = time.perf_counter() - t
            t2 = time.perf_counter()
            geo.locate(xq, QueryOptions(k=5))
            t_search = time.perf_counter() - t2
            rows["geoindex_total"].append(time.perf_counter() - t)
            rows["geoindex_image"].append(t_img)
            rows["geoindex_search"].append(t_search)
    med = {k: statistics.median(v) for k, v in rows.items()}
    table_rows = [
        {"system": "reference GeoCLIP predict()", "total_s": round(med["reference_total"], 3),
         "image_s": round(med["reference_image"], 3), "gallery_or_search_s": round(med["reference_gallery"], 4)},
        {"system": f"geoindex ({geo.dir.factory}, {geo.ntotal:,} cells)", "total_s": round(med["geoindex_total"], 3),
         "image_s": round(med["geoindex_image"], 3), "gallery_or_search_s": round(med["geoindex_search"], 6)},
    ]
    print(table(table_rows, ["system", "total_s", "image_s", "gallery_or_search_s"]))
    speed = {"end_to_end": round(med["reference_total"] / med["geoindex_total"], 2),
             "gallery_step": round(med["reference_gallery"] / med["geoindex_search"])}
    print(f"speed-up: {speed['end_to_end']}x end to end, {speed['gallery_step']:,}x on the gallery step "
          f"(median of {args.images} images, clip={args.clip})")
    save("vs_reference.json", {"machine": machine(), "clip": args.clip, "images": args.images,
                               "medians_s": med, "rows": table_rows, "speedup": speed, "index": geo.summary()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
