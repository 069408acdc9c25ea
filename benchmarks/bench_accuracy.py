"""The standard image-geolocation evaluation: how far off are the predictions?

Input: a CSV of ``image path, lat, lng`` (header optional; paths relative to the CSV) and the
images. Output: accuracy within 1 / 25 / 200 / 750 / 2500 km and the median error, for an index
(``--index DIR``; top-1 prediction, optionally ``--aggregate-res``) or for GeoCLIP's own 100K
gallery (``--gallery-100k``), side by side when both are given. Run Im2GPS3k or YFCC4k with
the real CLIP weights::

    python benchmarks/bench_accuracy.py --csv im2gps3k.csv --index indexes/res6-land --gallery-100k \\
        --clip-checkpoint ~/ckpt/open_clip_ViT-L-14-openai.bin

With ``--photos REF`` (a reference photo gallery, e.g. MP-16 built with ``geoindex build --photos``)
each index is also evaluated fused with the nearest reference photos, at each ``--photo-weight``
(weight 0 = the cells alone, always shown beside)::

    python benchmarks/bench_accuracy.py --csv im2gps3k.csv --index indexes/res6-land --photos ref-mp16 \
        --photo-weight 0.25 --photo-weight 0.5 --clip-checkpoint ~/ckpt/open_clip_ViT-L-14-openai.bin

GeoCLIP's published Im2GPS3k numbers (14.11 / 34.47 / 50.65 / 69.67 / 83.82 %) are printed as the
reference. Results: benchmarks/results/accuracy.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from common import haversine_km, machine, save, table
from geo_eval import GEOCLIP_IM2GPS3K, Gallery100K, accuracy_table


def read_eval_csv(path: Path) -> tuple[list[Path], np.ndarray]:
    rows = list(csv.reader(open(path, newline="", encoding="utf-8-sig")))
    if rows and not _is_float(rows[0][1] if len(rows[0]) > 1 else ""):
        rows = rows[1:]
    paths, coords = [], []
    for line, row in enumerate(rows, 1):
        try:
            img, lat, lng = row[0], float(row[1]), float(row[2])
        except (IndexError, ValueError):
            raise SystemExit(f"{path} row {line}: {row!r} is not image,lat,lng") from None
        p = Path(img)
        paths.append(p if p.is_absolute() else path.parent / p)
        coords.append((lat, lng))
    if not paths:
        raise SystemExit(f"{path} has no rows")
    return paths, np.array(coords)


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", type=Path, required=True)
    p.add_argument("--index", type=Path, action="append", default=[], help="index dir (repeatable)")
    p.add_argument("--gallery-100k", action="store_true", help="also evaluate GeoCLIP's 100K gallery")
    p.add_argument("--aggregate-res", type=int, default=None)
    p.add_argument("--clip-model", default=None, help="default: the backbone --weights was trained on, else ViT-L-14")
    p.add_argument("--weights", type=Path, default=None, help="a GeoCLIP weights folder (geoindex-train fit --out)")
    p.add_argument("--clip-checkpoint", default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/accuracy.json)")
    p.add_argument("--map", type=Path, default=None, metavar="OUT.png",
                   help="also draw each index's errors on a world map (OUT-<index>.png with several)")
    p.add_argument("--photos", type=Path, default=None, metavar="REF",
                   help="reference photo gallery: also evaluate each index fused with its nearest photos")
    p.add_argument("--photo-weight", type=float, action="append", default=None, metavar="W",
                   help="the photos' share in the fusion (repeatable; default the library's, 0.25)")
    args = p.parse_args(argv)
    if not args.index and not args.gallery_100k:
        raise SystemExit("give --index DIR and/or --gallery-100k")

    from geoindex.errors import GeoindexError
    from geoindex import Geolocator, QueryOptions
    from geoindex.encoders.clip import load_image_encoder
    from geoindex.encoders.images import load_image

    paths, truth = read_eval_csv(args.csv)
    encoder = load_image_encoder(args.clip_model, args.clip_checkpoint, batch_size=args.batch_size,
                                 weights=args.weights)
    t = time.perf_counter()
    xq, skipped = [], []
    for start in range(0, len(paths), args.batch_size):
        imgs = []
        for i, path in enumerate(paths[start : start + args.batch_size], start):
            try:
                imgs.append(load_image(path))
            except GeoindexError as e:
                skipped.append(i)
                print(f"skipping {path}: {e}", file=sys.stderr)
        if imgs:
            xq.append(encoder.encode_images(imgs))
    keep = np.setdiff1d(np.arange(len(paths)), skipped)
    xq, truth = np.concatenate(xq), truth[keep]
    encode_s = time.perf_counter() - t

    rows, per_image = [], {}
    from geoindex.photos import FusionSettings, open_photos

    weights = [None] if args.photos is None else [0.0, *(args.photo_weight or [FusionSettings().weight])]
    for index_dir in args.index:
        geo = Geolocator(index_dir, weights=args.weights,
                         evidence=None if args.photos is None else open_photos(args.photos, args.weights))
        for w in weights:  # None: no photos; 0: photos open but weightless (= the cells alone)
            label = "" if w is None else f" + photos w={w:g}"
            if w is not None:
                geo.evidence.fusion = FusionSettings(weight=w)
            results = geo.locate(xq, QueryOptions(k=1, aggregate_res=args.aggregate_res))
            pred = np.array([[r.predictions[0].lat, r.predictions[0].lng] for r in results])
            err = haversine_km(truth[:, 0], truth[:, 1], pred[:, 0], pred[:, 1])
            rows.append({"gallery": f"{index_dir} ({geo.dir.factory}){label}", **accuracy_table(err)})
            per_image[f"{index_dir}{label}"] = err.round(3).tolist()
        if args.map is not None:
            from geoindex.maps import draw_errors

            out = args.map if len(args.index) == 1 else args.map.with_name(f"{args.map.stem}-{index_dir.name}.png")
            draw_errors(truth, pred, out, title=f"{args.csv.name} on {index_dir.name}: true location (dot) to top 1")
            print(f"map: {out}")
    if args.gallery_100k:
        pred = Gallery100K(args.weights).top1_latlng(xq)
        err = haversine_km(truth[:, 0], truth[:, 1], pred[:, 0], pred[:, 1])
        rows.append({"gallery": "GeoCLIP 100K gallery (exact)", **accuracy_table(err)})
        per_image["gallery_100k"] = err.round(3).tolist()
    rows.append({"gallery": "GeoCLIP paper, Im2GPS3k (reference)",
                 **{f"within_{k}km": v for k, v in GEOCLIP_IM2GPS3K.items()}})
    cols = ["gallery", "within_1km", "within_25km", "within_200km", "within_750km", "within_2500km", "median_km", "n"]
    print(table(rows, cols))
    result = {"machine": machine(), "csv": str(args.csv), "clip_model": encoder.name,
              "weights": str(args.weights) if args.weights else "released", "images": len(paths),
              "skipped": [str(paths[i]) for i in skipped],
              "photos": str(args.photos) if args.photos else None, "encode_s": round(encode_s, 2), "rows": rows,
              "errors_km": per_image}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(__import__("json").dumps(result, indent=2))
        print(f"saved {args.out}")
    else:
        print(f"saved {save('accuracy.json', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
