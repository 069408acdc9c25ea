"""The FastAPI application: routes, limits, error mapping, content negotiation.

Models and the index are loaded once (:class:`Engine`); inference and FAISS search run off the
event loop in bounded thread pools; image and text encoding go through micro-batchers. Every
bad input is a 4xx with a JSON body ``{"error": {"status", "type", "message"}}``; the server keeps
serving.
"""

import asyncio
import contextlib
import logging
import os
from typing import Annotated

import orjson
from fastapi import FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import Field
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response

from geoindex.encoders.clip import validate_texts
from geoindex.encoders.location import EMBED_DIM
from geoindex.errors import (
    GeoindexError,
    ImageTooLargeError,
    IndexDirError,
    InvalidArgumentError,
    InvalidImageError,
    InvalidQueryError,
    WeightsNotFoundError,
)
from geoindex.serve.engine import Engine, require_encoder
from geoindex.serve.integrity import STATES
from geoindex.serve.http import BodyLimit, OrjsonRoute, error_response
from geoindex.serve.metrics import Metrics, MetricsMiddleware
from geoindex.serve.schema import (
    BBOX_TEXT,
    COUNTRY,
    H3_OR_DECIMAL,
    PATTERN_WORDS,
    EmbeddingsResponse,
    bounds_of,
    coordinates_model,
    locate_responses,
    refusals,
    request_models,
)
from geoindex.serve.settings import ENV_VAR, ServeSettings

log = logging.getLogger("geoindex.serve")
GEOJSON = "application/geo+json"


# -- helpers -----------------------------------------------------------------------------------------
def _status_for(e: GeoindexError) -> int:
    if isinstance(e, ImageTooLargeError):
        return 413
    if isinstance(e, InvalidImageError):
        return 415
    if isinstance(e, (WeightsNotFoundError, IndexDirError)):
        return 503
    if isinstance(e, (InvalidQueryError, InvalidArgumentError)):
        return 422
    return 500


def _options(engine: Engine, f, boxes: list | None = None):
    """QueryOptions from a validated request model (limits already enforced by its schema)."""
    from geoindex.index.search import SearchSettings
    from geoindex.locate.options import QueryOptions
    from geoindex.locate.regions import make_filter

    if boxes is None:
        boxes = f.bbox or []
        if boxes and not isinstance(boxes[0], (list, tuple)):
            boxes = [boxes]
    region = make_filter(f.country, boxes, f.cells)
    options = QueryOptions(k=min(f.top_k, engine.geolocator.ntotal), candidates=f.candidates,
                           search=SearchSettings(refine=f.refine), aggregate_res=f.aggregate_res,
                           confidence=f.confidence, region=region, joint=getattr(f, "joint", False))
    return options


def _wants_geojson(request: Request, fmt: str | None) -> bool:
    """``?format=`` (json or geojson: the route's query pattern refuses anything else), else Accept."""
    if fmt is not None:
        return fmt == "geojson"
    return GEOJSON in request.headers.get("accept", "")


async def _locate(engine: Engine, xq, options, labels, geojson: bool, exifs: list | None = None) -> Response:
    from geoindex.locate.geojson import results_to_geojson

    results = await engine.locate(xq, options)
    if geojson:
        return Response(orjson.dumps(results_to_geojson(results, labels)), media_type=GEOJSON)
    answers = [r.to_dict() for r in results]
    if exifs is not None:  # uploaded photos: their own GPS position and time, and the top guess's distance to it
        from geoindex.archive.rows import exif_fields

        for answer, result, exif in zip(answers, results, exifs):
            answer.update(exif_fields(exif, result))
    return Response(orjson.dumps({"results": answers}), media_type="application/json")


# -- the app -------------------------------------------------------------------------------------------
def create_app(settings: ServeSettings, engine: Engine | None = None) -> FastAPI:
    """Build the app; loads the engine now (refusing to start on a bad index) unless one is given."""
    engine = engine or Engine(settings)
    s = settings
    Filters, TextRequest, EmbeddingRequest = request_models(  # noqa: N806 (classes)
        s.max_top_k, s.max_candidates, engine.geolocator.resolution, EMBED_DIM, s.max_texts, s.max_embeddings)
    CoordinatesRequest = coordinates_model(s.max_coordinates)  # noqa: N806 (a class)
    metrics = Metrics()
    engine.image_batcher.on_batch = engine.text_batcher.on_batch = metrics.batch_items.observe

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await engine.close()

    app = FastAPI(title="geoindex", version=_version(), lifespan=lifespan,
                  description="Where was this photo taken? GeoCLIP embeddings of dense H3 galleries, searched with FAISS.")
    app.router.route_class = OrjsonRoute
    app.state.engine = engine
    app.state.ready = True

    @app.exception_handler(GeoindexError)
    async def _geoindexerror_response(request: Request, e: GeoindexError):
        status = _status_for(e)
        if status >= 500:
            log.error("request failed: %s", e)
        return error_response(status, type(e).__name__, str(e))

    @app.exception_handler(RequestValidationError)
    async def _validationerror_response(request: Request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        value = first.get("input")
        shown = f" = {value!r}" if isinstance(value, (int, float, str)) and len(repr(value)) <= 60 else ""
        msg = first.get("msg", "invalid request")
        if first.get("type") == "string_pattern_mismatch":
            msg = PATTERN_WORDS.get(first.get("ctx", {}).get("pattern"), msg)
        message = f"{where}{shown}: {msg}"
        if first.get("type") == "json_invalid":
            message += (f" ({first.get('ctx', {}).get('error', 'malformed')}): send standard JSON; NaN and Infinity "
                        "are not JSON numbers, every value must be finite")
        return error_response(422, "ValidationError", message, errors)

    @app.exception_handler(HTTPException)
    async def _httperror_response(request: Request, e: HTTPException):
        return error_response(e.status_code, "HTTPError", str(e.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, "InternalError", "unexpected server error; the request was not processed")

    fields = Filters.model_fields
    Format = Annotated[str | None, Query(description="json or geojson", pattern="^(json|geojson)$")]  # noqa: N806

    def form(name: str, **kw):
        """A multipart field with the same bounds and words as the JSON routes' field."""
        f = fields[name]
        bounds = {**bounds_of(f.annotation), **{m: getattr(c, m) for c in f.metadata  # X | None, or X
                                                for m in ("ge", "gt", "le", "lt", "pattern") if hasattr(c, m)}}
        return Form(description=f.description, **bounds, **kw)

    @app.post("/v1/locate", summary="Geolocate uploaded images (multipart)", responses=locate_responses(400, 503))
    async def locate_images(
        request: Request,
        images: Annotated[list[UploadFile], File(description=f"1..{s.max_images} image files",
                                                 min_length=1, max_length=s.max_images)],
        top_k: Annotated[int, form("top_k")] = 5,
        candidates: Annotated[int, form("candidates")] = 256,
        country: Annotated[list[Annotated[str, Field(pattern=COUNTRY)]],
                           Form(description="ISO 3166-1 alpha-2 codes (OR)")] = [],  # noqa: B006
        bbox: Annotated[list[Annotated[str, Field(pattern=BBOX_TEXT)]],
                        Form(description="w,s,e,n (repeatable, OR); s < n, w < e")] = [],  # noqa: B006
        cells: Annotated[list[Annotated[str, Field(pattern=H3_OR_DECIMAL)]], Form(description="H3 cells (OR)")] = [],  # noqa: B006
        aggregate_res: Annotated[int, form("aggregate_res")] = None,  # optional, never null in a form
        confidence: Annotated[float, form("confidence")] = None,
        refine: Annotated[int, form("refine")] = None,
        format: Format = None,
    ):
        require_encoder(engine)
        filters = Filters(top_k=top_k, candidates=candidates, country=country, aggregate_res=aggregate_res,
                          confidence=confidence, cells=cells, refine=refine)
        options = _options(engine, filters, boxes=bbox)
        geojson = _wants_geojson(request, format)
        engine.geolocator.check_options(options)
        blobs = []
        for upload in images:
            data = await upload.read(s.max_upload_bytes + 1)
            if len(data) > s.max_upload_bytes:
                raise ImageTooLargeError(f"image {upload.filename!r} is over {s.max_upload_bytes:,} bytes: send a smaller file")
            ctype = (upload.content_type or "").lower()
            if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
                raise InvalidImageError(f"{upload.filename!r} has content type {ctype!r}: send an image (image/jpeg, image/png, ...)")
            blobs.append((data, upload.filename))
        engine.require_intact()  # before decoding: a corrupt index answers nothing
        decoded = await engine.decode(blobs)
        xq = await engine.image_batcher.submit(list(decoded))
        from geoindex.archive.exif import read_exif

        exifs = [read_exif(b[0]) for b in blobs]  # the headers only: no pixels decoded again
        return await _locate(engine, xq, options, [b[1] or str(i) for i, b in enumerate(blobs)], geojson, exifs)

    @app.post("/v1/locate/text", summary="Geolocate text descriptions", responses=locate_responses(503))
    async def locate_text(request: Request, body: TextRequest, format: Format = None):
        require_encoder(engine)
        options = _options(engine, body)
        geojson = _wants_geojson(request, format)
        engine.geolocator.check_options(options)
        validate_texts(body.texts)  # here, not in the batch: one bad text must not fail its batch-mates
        xq = await engine.text_batcher.submit(list(body.texts))
        return await _locate(engine, xq, options, body.texts, geojson)

    @app.post("/v1/locate/embedding", summary="Geolocate GeoCLIP embeddings", responses=locate_responses())
    async def locate_embedding(request: Request, body: EmbeddingRequest, format: Format = None):
        from geoindex.locate.options import validate_embeddings

        options = _options(engine, body)
        xq = validate_embeddings(body.embeddings)
        return await _locate(engine, xq, options, list(range(len(xq))), _wants_geojson(request, format))

    @app.post("/v1/embed/locations", summary="GeoCLIP location embeddings of coordinates",
              response_model=EmbeddingsResponse, responses=refusals(408, 413, 415, 422))
    async def embed_locations(body: CoordinatesRequest):
        import numpy as np

        from geoindex.encoders.location import encode_latlng

        latlng = np.asarray(body.coordinates, dtype=np.float64)
        encoder = engine.geolocator.encoder_reranker  # one location encoder per process, loaded on first use
        xb, inside = await asyncio.get_running_loop().run_in_executor(
            engine.search_pool, lambda: (encode_latlng(encoder.model, latlng),
                                         engine.geolocator.covers(latlng[:, 0], latlng[:, 1])))
        return Response(orjson.dumps({"embeddings": xb, "inside_region": inside}, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    @app.get("/v1/cells/{cell}", summary="One cell's metadata", responses={
        200: {"description": "the cell's row: cell, res, lat, lng, country, admin1, place, ..."}, **refusals(404, 422)})
    async def get_cell(cell: Annotated[str, Path(pattern=H3_OR_DECIMAL, description="H3 id, hex or decimal")]):
        import h3

        # the path pattern admits only H3-shaped ids: 15 hex digits from 8, or 18 decimal digits
        # in H3's range, so both parse and fit in 64 bits
        cell_id = int(cell) if cell.isdigit() else h3.str_to_int(cell)

        def lookup():
            cur = engine.db.cursor()
            try:
                return cur.execute("SELECT * FROM cells WHERE cell = ?", [cell_id]).fetchone(), [
                    d[0] for d in cur.description]
            finally:
                cur.close()

        engine.require_intact()
        row, names = await asyncio.get_running_loop().run_in_executor(engine.search_pool, lookup)
        if row is None:
            return error_response(404, "NotFound", f"cell {cell!r} is not in this index")
        data = dict(zip(names, row))
        data["cell_h3"] = h3.int_to_str(data["cell"]) if data.get("res") is not None else None
        return Response(orjson.dumps(data), media_type="application/json")

    @app.get("/v1/index", summary="What this index is")
    async def index_summary():
        return Response(orjson.dumps(engine.geolocator.summary()), media_type="application/json")

    @app.get("/healthz", summary="Liveness, and the index's integrity", responses=refusals(503))
    async def healthz():
        check = engine.integrity.report()
        if check["state"] == "corrupt":
            return error_response(503, "IndexCorrupt", check["error"], {"integrity": check})
        return {"status": "ok", "integrity": check}

    @app.get("/readyz", summary="Readiness: index and models loaded, index not corrupt", responses=refusals(503))
    async def readyz():
        if not app.state.ready:
            return error_response(503, "NotReady", "loading")
        if engine.integrity.state == "corrupt":
            return error_response(503, "IndexCorrupt", engine.integrity.error)
        return {"status": "ready", "images": engine.encoder is not None, "integrity": engine.integrity.state}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics_route():
        metrics.integrity.set(STATES[engine.integrity.state])
        metrics.decoded_bytes.set(engine.decode_budget.in_use)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    from geoindex.serve.photos import mount_photos
    from geoindex.serve.web import mount_web

    mount_photos(app, engine, settings)
    mount_web(app, settings)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, timeout=settings.body_timeout)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _version() -> str:
    from geoindex.constants import __version__

    return __version__


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: settings come from $GEOINDEX_SERVE_SETTINGS."""
    return create_app(ServeSettings.from_json(os.environ[ENV_VAR]))
