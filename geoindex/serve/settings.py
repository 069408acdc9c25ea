"""Server settings: one typed object, built from the command line (or JSON in the environment
for uvicorn worker processes)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

ENV_VAR = "GEOINDEX_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServeSettings:
    index: str
    clip_model: str | None = None  # None: the backbone --weights was trained on, else ViT-L-14
    weights: str | None = None  # a GeoCLIP weights folder (geoindex-train fit --out); None: the released weights
    clip_checkpoint: str | None = None
    embeddings_only: bool = False  # serve without CLIP (image and text routes answer 503)
    device: str = "auto"
    precision: str | None = None  # fp32, fp16 (CUDA) or int8 (ONNX Runtime, after its self-check); None: by device
    int8_probe: str | None = None  # photos the int8 self-check runs on at start (8-64 like those served)
    int8_min_agreement: float = 0.98  # int8 is refused below this top-1 cell agreement with fp32 on the probes
    backend: str = "auto"  # image tower: auto (torch on CUDA; the faster measured at export on the CPU), torch, onnx
    max_request_bytes: int = 64 * 2**20  # whole request body
    body_timeout: float = 30.0  # seconds a request body may stall between two chunks (then 408)
    header_timeout: float = 10.0  # seconds from connecting (or a next request's first byte) to complete headers
    keep_alive_timeout: float = 5.0  # seconds an idle kept-alive connection stays open between requests
    max_connections: int = 1000  # open connections and requests in progress; beyond, 503 at once
    max_upload_bytes: int = 20 * 2**20  # one image file
    max_pixels: int = 64_000_000
    max_decoded_bytes: int = 2**30  # one request's images, decoded (PIL: 4 bytes a pixel; a JPEG at draft size)
    server_decoded_bytes: int = 2**30  # decoded images in flight across the server; requests wait for room
    max_images: int = 16
    max_texts: int = 64
    max_embeddings: int = 256
    max_coordinates: int = 1024  # points per POST /v1/embed/locations
    max_top_k: int = 100
    max_candidates: int = 4096
    max_refine_work: int = 256  # queries x refine per request (refining a candidate runs the location encoder)
    search_chunk_s: float = 0.25  # a request's queries run in chunks of about this many seconds, interleaved
    checksum_at_start_mb: float = 100.0  # index files up to this size are checksummed before the port opens
    search_threads: int = 1  # per worker; measured: 2 threads contend for the GIL (-20% req/s)
    decode_threads: int = 2
    batch_window_ms: float = 2.0
    max_batch: int = 16
    photos: str | None = None  # a reference photo gallery (geoindex build --photos): answers gain neighbours
    photos_root: str | None = None  # the only folder reference photo images are served from (none without it)
    tiles: str | None = None  # the page's online tile layer, an {z}/{x}/{y} URL template (offline basemap without)

    def __post_init__(self) -> None:
        """Every limit and count is positive (the batching window may be 0: no waiting)."""
        from geoindex.errors import InvalidArgumentError

        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if value < 0 or (value == 0 and f.name != "batch_window_ms"):
                flag = "--" + f.name.replace("_", "-")
                raise InvalidArgumentError(f"{flag} {value} must be {'>= 0' if f.name == 'batch_window_ms' else '> 0'} "
                                           f"(default {f.default})")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
