"""``geoindex-serve --index DIR --host H --port P``: run the HTTP API on uvicorn.

The index and models load before the port opens; an invalid index dir (or missing CLIP weights,
unless ``--embeddings-only``) stops the start with a one-line message and exit status 2. With
``--workers N`` that check loads an engine in a spawned process that then exits: the supervisor
itself never holds an index or a model.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields

from geoindex.cli.common import BACKEND_HELP, CLIP_MODEL_HELP, DEVICE_HELP, WEIGHTS_HELP, add_index
from geoindex.errors import GeoindexError, WeightsNotFoundError
from geoindex.serve.protocol import server_config, uvicorn_kwargs
from geoindex.serve.settings import ENV_VAR, ServeSettings

PROG = "geoindex serve"
METAVARS = {"clip_model": "MODEL", "int8_probe": "DIR", "int8_min_agreement": "F", "weights": "DIR", "clip_checkpoint": "PATH", "photos": "REF",
            "photos_root": "DIR", "tiles": "URL"}
HELP = {  # one line per setting: what it does, its unit; the default is appended
    "clip_model": CLIP_MODEL_HELP,
    "weights": WEIGHTS_HELP,
    "clip_checkpoint": "local CLIP weights: an open_clip/OpenAI file or a transformers folder (default: open_clip's "
                       "cache, then the Hugging Face cache, then a download)",
    "embeddings_only": "serve without CLIP: photo and text queries answer 503, coordinates and embeddings work",
    "device": DEVICE_HELP,
    "max_request_bytes": "largest request body, bytes",
    "body_timeout": "seconds a request body may stall between two chunks before a 408",
    "header_timeout": "seconds from connecting to complete request headers before the connection is closed",
    "keep_alive_timeout": "seconds an idle kept-alive connection stays open",
    "max_connections": "open connections and requests in progress; beyond, 503 at once",
    "max_upload_bytes": "largest image file, bytes",
    "max_pixels": "largest image, pixels (width x height)",
    "max_decoded_bytes": "one request's images decoded, bytes (413 beyond)",
    "server_decoded_bytes": "decoded images in flight across the server, bytes; requests wait for room",
    "max_images": "images per POST /v1/locate",
    "max_texts": "texts per POST /v1/locate/text",
    "max_embeddings": "embeddings per POST /v1/locate/embedding",
    "max_coordinates": "points per POST /v1/embed/locations",
    "max_top_k": "largest top_k a request may ask",
    "max_candidates": "largest candidates a request may ask",
    "max_refine_work": "queries x refine per request (each refined cell costs about one query)",
    "search_chunk_s": "seconds of search a request runs before another request's search may go between",
    "checksum_at_start_mb": "index files up to this size, MB, are checksummed before the port opens (larger ones "
                            "in the background)",
    "search_threads": "search threads per worker",
    "decode_threads": "image decode threads per worker",
    "batch_window_ms": "milliseconds an encoder batch waits for more requests (0: no waiting)",
    "max_batch": "images or texts per encoder batch",
    "photos": "reference photo gallery (geoindex build --photos): each answer gains its nearest reference photos "
              "and fuses their places (docs/photos.md)",
    "photos_root": "folder the page's reference photo thumbnails are served from; no other file is ever read",
    "tiles": "the page's online tile layer, a {z}/{x}/{y} URL template (default: the offline basemap only)",
    "backend": BACKEND_HELP,
    "precision": "image tower precision: fp32, fp16 (CUDA) or int8 (ONNX Runtime on the CPU, only after its "
                 "self-check on --int8-probe and this index) (default: fp16 on CUDA, fp32 on the CPU)",
    "int8_probe": "--precision int8: folder of 8-64 photos like those served, on which int8 is compared with fp32 "
                  "at start (needed unless this index's check is cached from an earlier run)",
    "int8_min_agreement": "--precision int8 is refused below this top-1 cell agreement with fp32 on the probes",
}


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="HTTP API: where was this photo taken?")
    add_index(p, type=str)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                       "only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port, printed)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes, each loading the index "
                                                          "(default 1)")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default warning)")
    defaults = ServeSettings(index="")
    for f in fields(ServeSettings):
        if f.name == "index":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        text = HELP[f.name] if isinstance(default, bool) or "(default" in HELP[f.name] else \
            f"{HELP[f.name]} (default {'none' if default is None else default})"
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", help=text)
        else:
            kind = type(default) if default is not None else str
            p.add_argument(flag, type=kind, default=default, help=text, metavar=METAVARS.get(f.name))
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import uvicorn

    from geoindex.serve.app import Engine, create_app

    try:
        settings = ServeSettings(**{f.name: getattr(args, f.name) for f in fields(ServeSettings)})
    except GeoindexError as e:
        return _refuse(str(e), prog)
    if args.workers > 1:
        # each worker loads its own engine: the supervisor checks the settings in a process of its
        # own, so that it never holds an index and its models (~840 MiB at res 5) while it supervises
        error = _check_in_child(settings)
        if error is not None:
            return _refuse(error, prog)
        os.environ[ENV_VAR] = settings.to_json()  # the workers' settings, the header deadline included
        uvicorn.run("geoindex.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level, **uvicorn_kwargs(settings))
        return 0
    try:
        engine = Engine(settings)  # load (and validate) before binding the port
    except GeoindexError as e:
        return _refuse(_explain(e), prog)
    config = server_config(create_app(settings, engine), settings, host=args.host, port=args.port,
                           log_level=args.log_level)
    _announcing_server(config).run()
    return 0


def listening_line(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"listening on http://{shown}:{port} (page at /, API docs at /docs)"


def _announcing_server(config):
    """uvicorn's server for ``config``, one that announces itself (uvicorn is imported lazily)."""
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        """uvicorn's server that says on stderr, once the models are warm and the port is open, where
        it listens (the bound port, when asked for port 0)."""

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started and not self.should_exit:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                print(listening_line(host, port), file=sys.stderr, flush=True)

    return AnnouncingServer(config)


def _explain(e: GeoindexError) -> str:
    if isinstance(e, WeightsNotFoundError):
        return f"{e}; or serve embedding queries only: geoindex serve --embeddings-only"
    return str(e)


def _refuse(message: str, prog: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def check_settings(settings_json: str) -> str | None:
    """Load an engine as a worker would; the error message, or None when it loads."""
    from geoindex.serve.app import Engine

    try:
        Engine(ServeSettings.from_json(settings_json))
    except GeoindexError as e:
        return _explain(e)
    return None


def _check_in_child(settings: ServeSettings) -> str | None:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(check_settings, settings.to_json()).result()
