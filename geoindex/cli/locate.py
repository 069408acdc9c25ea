"""``geoindex locate IMAGE... --index DIR``: where was this photo taken?

Also ``--text "..."`` (CLIP text tower + GeoCLIP head) and ``--embedding FILE.npy`` ((n, 512)
GeoCLIP embeddings). Output: a table (default), JSON (a list with one object per query, each
with a ``predictions`` list, best first) or GeoJSON. Errors are one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from geoindex.cli.common import add_backend, add_clip_model, add_device, add_format, add_index, add_weights
from geoindex.cli import archive
from geoindex.errors import GeoindexError, InvalidArgumentError

PROG = "geoindex locate"
EPILOG = """examples:
  geoindex locate photo.jpg --index idx-r5
  geoindex locate a.jpg b.png --index idx-r5 --top-k 3 --country FR --country ES --format json
  geoindex locate --text "a beach with palm trees and colonial houses" --index idx-r5 --confidence 0.9 --format geojson
  geoindex locate --embedding queries.npy --index idx-r5 --bbox=-10,35,3,44 --aggregate-res 3
  geoindex locate ~/Pictures --index idx-r5 --out results.parquet      (a photo archive: resumable; also .csv .jsonl .geojson)
"""


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Geolocate images, texts or GeoCLIP embeddings.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", help="image files (with --out: also folders)")
    add_index(p)
    p.add_argument("--text", action="append", default=[], help="a text query (repeatable)")
    p.add_argument("--embedding", type=Path, help=".npy file of (n, 512) GeoCLIP embeddings")
    p.add_argument("--top-k", "-k", type=int, default=5, help="predictions per query (default 5)")
    p.add_argument("--candidates", type=int, default=256, help="cells the softmax runs over (default 256)")
    p.add_argument("--search", default=None, help='search parameters overriding the index default, e.g. "nprobe=64" or "rerank=32" (exact re-ranking; 0: off)')
    p.add_argument("--refine", nargs="?", const=-1, default=None, metavar="M",
                   help="refine the M best cells below the grid with the location encoder (default M: 4); "
                        "same as --search refine=M")
    p.add_argument("--country", action="append", default=[], help="restrict to an ISO alpha-2 country (repeatable)")
    p.add_argument("--bbox", action="append", default=[], help="restrict to west,south,east,north (repeatable; "
                   "write --bbox=-10,35,3,44 when west is negative)")
    p.add_argument("--cells", action="append", default=[], help="restrict to an H3 cell at any coarser resolution")
    p.add_argument("--aggregate-res", type=int, default=None, help="sum probability into H3 parents at this res")
    p.add_argument("--confidence", type=float, default=None, help="add the region holding this mass, e.g. 0.9")
    p.add_argument("--joint", action="store_true",
                   help="the queries are photos of one place: answer once from all of them (their summed "
                        "embedding, n x the logit scale; docs/querying.md)")
    add_format(p)
    p.add_argument("--map", type=Path, default=None, metavar="OUT.png",
                   help="also draw each query's predictions (and --confidence region, --true location) on a map; "
                        "several queries write OUT-1.png, OUT-2.png, ...")
    p.add_argument("--true", action="append", default=[], metavar="LAT,LNG", type=_latlng,
                   help="where the photo was really taken: on the map, with its distance to the top prediction "
                        "(once for all queries, or once per query in order)")
    add_clip_model(p)
    add_weights(p)
    p.add_argument("--clip-checkpoint", default=None,
                   help="local ViT-L-14 weights: an open_clip/OpenAI file or a transformers CLIP folder "
                   "(else $GEOINDEX_CLIP_CHECKPOINT, open_clip's cache, the Hugging Face cache's "
                   "openai/clip-vit-large-patch14, else an open_clip download)")
    add_device(p)
    add_backend(p)
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                   help="image tower precision (default: fp16 on CUDA, fp32 on the CPU; int8 only after its self-check)")
    p.add_argument("--int8-probe", type=Path, default=None, metavar="DIR",
                   help="photos the int8 self-check compares fp32 and int8 on (default: the run's first 64)")
    p.add_argument("--int8-min-agreement", type=float, default=0.98, metavar="F",
                   help="int8 is refused below this top-1 cell agreement with fp32 on the probes (default 0.98)")
    p.add_argument("--photos", type=Path, default=None, metavar="REF",
                   help="reference photo gallery (geoindex build --photos): each answer lists its nearest reference "
                        "photos and fuses their places with the cells (docs/photos.md)")
    p.add_argument("--neighbours", type=int, default=10, metavar="K", help="reference photos per answer (default 10)")
    p.add_argument("--photo-weight", type=float, default=None, metavar="W",
                   help="the photos' share in the fused answer, 0..1 (default 0.25, unmeasured on real photos; 0: cells alone)")
    p.add_argument("--max-pixels", type=int, default=64_000_000, help="refuse larger images (default 64 MP)")
    archive.add_arguments(p)
    return p


def _latlng(text: str) -> tuple[float, float]:
    try:
        lat, lng = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAT,LNG (e.g. 48.8584,2.2945)") from None
    if not (abs(lat) <= 90 and abs(lng) <= 180):
        raise argparse.ArgumentTypeError(f"{text!r} is outside [-90, 90] x [-180, 180] (is it LNG,LAT?)")
    return lat, lng


def _refuse_folders(images: list[str]) -> None:
    """A folder given where an image goes: say what it is and what to type instead."""
    for image in images:
        path = Path(image)
        if not path.is_dir():
            continue
        if (path / "manifest.json").is_file():
            raise InvalidArgumentError(f"{image!r} is an index folder, not an image: give it with --index {image}")
        raise InvalidArgumentError(
            f"{image!r} is a folder, not an image: give the image files (e.g. {path / '*.jpg'}), or geolocate "
            f"every photo in it with the archive mode (`geoindex locate {image} --index INDEX --out RESULTS`); "
            f"if it is an index, give it with --index {image}")


def map_paths(out: Path, n: int) -> list[Path]:
    """OUT.png for one query; OUT-1.png ... OUT-n.png for several."""
    return [out] if n == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(1, n + 1)]


def guard_int8(args, encoder, geolocator, run_photos) -> None:
    """``--precision int8``: the self-check on ``geolocator``'s index (int8_check.guard), on the photos of
    ``--int8-probe`` or the first ones of the run (``run_photos()``, paths)."""
    if args.precision != "int8":
        return
    from geoindex.archive.walk import find_photos
    from geoindex.locate.int8_check import guard, read_probes

    def probes():
        return read_probes(find_photos([args.int8_probe]) if args.int8_probe is not None else run_photos(),
                           args.max_pixels)

    guard(encoder, geolocator, probes, args.int8_min_agreement)


def _queries(args, geolocator=None):
    """(labels, embeddings) for every query given."""
    import numpy as np

    from geoindex.errors import InvalidQueryError

    labels, parts = [], []
    if args.images or args.text:
        from geoindex.encoders.clip import load_image_encoder
        from geoindex.encoders.images import load_image

        images = [load_image(p, max_pixels=args.max_pixels) for p in args.images]  # fail before model load
        encoder = load_image_encoder(args.clip_model, args.clip_checkpoint, args.device, weights=args.weights,
                                     backend=args.backend, precision=args.precision)
        guard_int8(args, encoder, geolocator, lambda: args.images)
        if images:
            parts.append(encoder.encode_images(images))
            labels += [str(p) for p in args.images]
        if args.text:
            parts.append(encoder.encode_texts(args.text))
            labels += args.text
    if args.embedding is not None:
        try:
            emb = np.load(args.embedding, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InvalidQueryError(f"--embedding {str(args.embedding)!r} is not a readable .npy array ({e})") from e
        from geoindex.locate.options import validate_embeddings

        emb = validate_embeddings(emb)
        parts.append(emb)
        labels += [f"{args.embedding}[{i}]" for i in range(len(emb))]
    if not parts:
        raise InvalidQueryError("nothing to geolocate: give image files, --text or --embedding")
    return labels, np.concatenate(parts)


def _photos(args):
    if args.photos is None:
        return None
    from geoindex.photos import FusionSettings, open_photos

    fusion = FusionSettings(k=args.neighbours, **({} if args.photo_weight is None else {"weight": args.photo_weight}))
    return open_photos(args.photos, args.weights, fusion)


def _table(labels, results, facts) -> str:
    lines = []
    for label, res, fact in zip(labels, results, facts):
        lines.append(f"{label}")
        if fact.get("exif_lat") is not None:
            lines.append(f"  EXIF GPS {fact['exif_lat']:9.4f} {fact['exif_lng']:10.4f}: "
                         f"{fact['km_from_exif']:,.1f} km from the top answer")
        for rank, p in enumerate(res.predictions, 1):
            where = " / ".join(x for x in (p.place, p.admin1, p.country) if x) or "--"
            if p.place is not None and p.place_km is not None:
                where += f" ({p.place_km:,.0f} km)"
            lines.append(f"  {rank:>2}. {p.lat:9.4f} {p.lng:10.4f}  p={p.probability:.3f}  "
                         f"score={p.score:.3f}  {where}")
        if res.radius_km is not None:
            lines.append(f"  radius: {res.radius_confidence:.0%} of the mass within {res.radius_km:,.1f} km of the top answer")
        if res.confidence_region is not None:
            props = res.confidence_region["properties"]
            lines.append(f"  confidence region: {len(props['cells'])} cells hold {props['mass']:.3f} of the mass")
        for n in res.neighbours or []:
            lines.append(f"  photo {n.lat:9.4f} {n.lng:10.4f}  sim={n.similarity:.3f}  {n.km_from_top:8.1f} km  {n.image}")
    return "\n".join(lines)


def _notes(geolocator, labels, results, truths, prog: str) -> None:
    """On stderr (stdout stays the answer): each true location's distance to the top prediction, and
    a warning when it lies outside a regional index's region."""
    from geoindex.cells.geocode import haversine_km

    for label, result, truth in zip(labels, results, truths):
        if truth is None:
            continue
        top = result.predictions[0]
        km = float(haversine_km(truth[0], truth[1], top.lat, top.lng))
        print(f"{prog}: {label!r}: top prediction {km:,.1f} km from the true location", file=sys.stderr)
        if note := geolocator.outside_note(*truth):
            print(f"{prog}: note: {note}", file=sys.stderr)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    from geoindex.index.search import SearchSettings
    from geoindex.locate.geojson import results_to_geojson
    from geoindex.locate.geolocator import Geolocator
    from geoindex.locate.options import QueryOptions
    from geoindex.locate.regions import make_filter

    try:
        if not archive.wanted(args):
            _refuse_folders(args.images)
        region = make_filter(args.country, args.bbox, args.cells)
        search = SearchSettings.parse(args.search)
        if args.refine is not None:
            from dataclasses import replace

            from geoindex.locate.refine import DEFAULT_REFINE

            search = replace(search, refine=SearchSettings.parse(
                f"refine={DEFAULT_REFINE if args.refine == -1 else args.refine}").refine)
        options = QueryOptions(k=args.top_k, candidates=args.candidates, search=search,
                               aggregate_res=args.aggregate_res, confidence=args.confidence, region=region)
        if archive.wanted(args):  # folders in, a results file out
            if args.joint:
                raise InvalidArgumentError("--joint answers the image files, texts or embeddings given here as one "
                                           "place; a results file (--out) has one row per photo: drop one of them")
            return archive.run(args, options, prog)
        geolocator = Geolocator(args.index, weights=args.weights, evidence=_photos(args))
        if geolocator.evidence is not None and (args.images or args.text):
            from geoindex.encoders.weights import clip_model_for, geoclip_files

            geolocator.evidence.gallery.check_encoder(clip_model_for(args.clip_model, geoclip_files(args.weights)), None, None)
        geolocator.check_options(options)  # before loading any model
        if args.map is not None and (args.map.suffix.lower() != ".png" or not args.map.parent.is_dir()):
            raise InvalidArgumentError(f"--map {str(args.map)!r}: give a .png path in an existing folder")
        from geoindex.maps.draw import check_map_outs  # never over a file it did not draw (--overwrite: explicitly)

        if args.map is not None and args.embedding is None:  # before any model loads
            check_map_outs(map_paths(args.map, 1 if args.joint else len(args.images) + len(args.text)), args.overwrite)
        labels, xq = _queries(args, geolocator)
        if args.joint:
            from dataclasses import replace as replace_options

            from geoindex.locate.joint import joint_options

            xq, options = joint_options(xq, replace_options(options, joint=True))
            labels = [f"joint ({len(labels)}): " + " + ".join(labels)]
        if args.map is not None:
            check_map_outs(map_paths(args.map, len(labels)), args.overwrite)
        if args.true and len(args.true) not in (1, len(labels)):
            raise InvalidArgumentError(f"--true was given {len(args.true)} times for {len(labels)} queries: "
                                       "give it once (for all) or once per query")
        truths = (args.true * len(labels) if len(args.true) == 1 else args.true) or [None] * len(labels)
        results = geolocator.locate(xq, options)
        for warning in dict.fromkeys(w for r in results for w in r.warnings or []):
            print(f"{prog}: warning: {warning}", file=sys.stderr)
        _notes(geolocator, labels, results, truths, prog)
        if args.map is not None:
            from geoindex.maps import draw_result

            for path, label, result, truth in zip(map_paths(args.map, len(labels)), labels, results, truths):
                draw_result(result, path, true_latlng=truth, title=f"{label}  ({Path(args.index).name})")
                print(f"{prog}: map of {label!r} -> {path}", file=sys.stderr)
    except GeoindexError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    facts = _photo_facts(args, results)
    if args.format == "json":
        print(json.dumps([{"query": label, **r.to_dict(), **f} for label, r, f in zip(labels, results, facts)], indent=2))
    elif args.format == "geojson":
        print(json.dumps(results_to_geojson(results, labels)))
    else:
        print(_table(labels, results, facts))
    return 0


def _photo_facts(args, results) -> list[dict]:
    """Per result: a photo's own EXIF position and time (``exif_lat``, ``exif_lng``,
    ``km_from_exif``, ``taken_at``) as the archive rows carry them; {} for texts, embeddings and
    joint answers."""
    from geoindex.archive.exif import read_exif
    from geoindex.archive.rows import exif_fields

    facts = [{} for _ in results]
    if args.joint:
        return facts
    for i, path in enumerate(args.images):
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        facts[i] = exif_fields(read_exif(data), results[i])
    return facts
