"""The options several commands share, defined once so that they read the same everywhere: the same
flag, metavar, default and help line in `geoindex build`, `locate`, `serve`, `embed`, `train` and
`inspect`. Each ``add_*`` adds its option to a parser or an argument group."""

from __future__ import annotations

from pathlib import Path

INDEX_HELP = "index directory (from geoindex build)"
DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N (default auto)"
WEIGHTS_HELP = ("GeoCLIP weights folder from `geoindex train fit` (default: the released weights); "
                "an index must be built with the weights it is queried with")
CLIP_MODEL_HELP = ("CLIP backbone: ViT-L-14 (GeoCLIP's), tiny-test for tests, or any open_clip ARCH:TAG "
                   "(default: the one --weights was trained on, else ViT-L-14)")
BACKEND_HELP = ("image tower runtime: auto (torch on CUDA; on the CPU, ONNX Runtime when it was measured faster than "
                "torch at export), torch or onnx")
FORMAT_HELP = {"table": "a table for reading", "json": "JSON", "geojson": "GeoJSON (RFC 7946)"}


def add_index(p, required: bool = True, type=Path) -> None:  # noqa: A002 (argparse's word)
    p.add_argument("--index", "-i", required=required, type=type, metavar="DIR", help=INDEX_HELP)


def add_device(p) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def add_backend(p) -> None:
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto", help=BACKEND_HELP + " (default auto)")


def add_weights(p, type=Path) -> None:  # noqa: A002
    p.add_argument("--weights", type=type, default=None, metavar="DIR", help=WEIGHTS_HELP)


def add_clip_model(p, default: str | None = None) -> None:
    text = CLIP_MODEL_HELP if default is None else CLIP_MODEL_HELP.split(" (default")[0] + f" (default {default})"
    p.add_argument("--clip-model", default=default, metavar="MODEL", help=text)


def add_format(p, choices: tuple[str, ...] = ("table", "json", "geojson"), default: str = "table") -> None:
    words = ", ".join(f"{c}: {FORMAT_HELP.get(c, c)}" for c in choices)
    p.add_argument("--format", choices=choices, default=default, help=f"output on stdout: {words} (default {default})")

