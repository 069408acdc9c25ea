"""``POST /v1/locate`` (uploaded images, multipart), ``/v1/locate/text`` and ``/v1/locate/embedding``:
a query in, the top cells out, as JSON or GeoJSON."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from pydantic import Field
from starlette.responses import Response

from geoindex.encoders.clip import validate_texts
from geoindex.errors import ImageTooLargeError, InvalidImageError
from geoindex.serve.engine import Engine, require_encoder
from geoindex.serve.http import OrjsonRoute
from geoindex.serve.requests import EmbeddingRequest, Filters, TextRequest, check_limits
from geoindex.serve.routes import get_engine
from geoindex.serve.schema import BBOX_TEXT, COUNTRY, H3_OR_DECIMAL, bounds_of, locate_responses

GEOJSON = "application/geo+json"
router = APIRouter(tags=["locate"], route_class=OrjsonRoute)
EngineDep = Annotated[Engine, Depends(get_engine)]
Format = Annotated[str | None, Query(description="json or geojson", pattern="^(json|geojson)$")]


def options_of(engine: Engine, f: Filters, boxes: list | None = None):
    """QueryOptions from a validated request model, after this server's limits (:func:`check_limits`)."""
    from geoindex.index.search import SearchSettings
    from geoindex.locate.options import QueryOptions
    from geoindex.locate.regions import make_filter

    check_limits(sent(f), engine.limits)
    if boxes is None:
        boxes = f.bbox or []
        if boxes and not isinstance(boxes[0], (list, tuple)):
            boxes = [boxes]
    region = make_filter(f.country, boxes, f.cells)
    return QueryOptions(k=min(f.top_k, engine.geolocator.ntotal), candidates=f.candidates,
                        search=SearchSettings(refine=f.refine), aggregate_res=f.aggregate_res,
                        confidence=f.confidence, region=region, joint=f.joint)


def sent(body) -> dict:
    """The fields a request gave (a default is never over a limit the client could fix)."""
    return {name: getattr(body, name) for name in body.model_fields_set}


def wants_geojson(request: Request, fmt: str | None) -> bool:
    """``?format=`` (json or geojson: the route's query pattern refuses anything else), else Accept."""
    if fmt is not None:
        return fmt == "geojson"
    return GEOJSON in request.headers.get("accept", "")


async def answer(engine: Engine, xq, options, labels, geojson: bool, exifs: list | None = None) -> Response:
    """Search ``xq`` and write the results as JSON (with the photos' EXIF fields) or GeoJSON."""
    from geoindex.locate.geojson import results_to_geojson

    results = await engine.locate(xq, options)
    if geojson:
        return Response(orjson.dumps(results_to_geojson(results, labels)), media_type=GEOJSON)
    answers = [r.to_dict() for r in results]
    if exifs is not None:  # uploaded photos: their own GPS position and time, and the top guess's distance to it
        from geoindex.archive.rows import exif_fields

        for one, result, exif in zip(answers, results, exifs):
            one.update(exif_fields(exif, result))
    return Response(orjson.dumps({"results": answers}), media_type="application/json")


def form(name: str, **kw):
    """A multipart field with the same bounds and words as the JSON routes' field."""
    f = Filters.model_fields[name]
    bounds = {**bounds_of(f.annotation), **{m: getattr(c, m) for c in f.metadata  # X | None, or X
                                            for m in ("ge", "gt", "le", "lt", "pattern") if hasattr(c, m)}}
    return Form(description=f.description, **bounds, **kw)


@router.post("/v1/locate", summary="Geolocate uploaded images (multipart)", responses=locate_responses(400, 503))
async def locate_images(
    request: Request,
    engine: EngineDep,
    images: Annotated[list[UploadFile], File(description="image files (at most this server's --max-images)",
                                             min_length=1)],
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
    joint: Annotated[bool, form("joint")] = False,
    format: Format = None,
):
    check_limits({"images": images}, engine.limits)
    require_encoder(engine)
    filters = Filters(top_k=top_k, candidates=candidates, country=country, aggregate_res=aggregate_res,
                      confidence=confidence, cells=cells, refine=refine, joint=joint)
    options = options_of(engine, filters, boxes=bbox)
    geojson = wants_geojson(request, format)
    engine.geolocator.check_options(options)
    s = engine.settings
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
    labels = [b[1] or str(i) for i, b in enumerate(blobs)]
    if joint:  # one answer from all the photos: no one photo's EXIF speaks for it
        return await answer(engine, xq, options, [f"joint ({len(labels)}): " + " + ".join(labels)], geojson)
    return await answer(engine, xq, options, labels, geojson, exifs)


@router.post("/v1/locate/text", summary="Geolocate text descriptions", responses=locate_responses(503))
async def locate_text(request: Request, body: TextRequest, engine: EngineDep, format: Format = None):
    check_limits(sent(body), engine.limits)  # a request over the limits is a 422 on any server
    require_encoder(engine)
    options = options_of(engine, body)
    geojson = wants_geojson(request, format)
    engine.geolocator.check_options(options)
    validate_texts(body.texts)  # here, not in the batch: one bad text must not fail its batch-mates
    xq = await engine.text_batcher.submit(list(body.texts))
    return await answer(engine, xq, options, body.texts, geojson)


@router.post("/v1/locate/embedding", summary="Geolocate GeoCLIP embeddings", responses=locate_responses())
async def locate_embedding(request: Request, body: EmbeddingRequest, engine: EngineDep, format: Format = None):
    xq, options = embedding_query(engine, body)
    return await answer(engine, xq, options, list(range(len(xq))), wants_geojson(request, format))


def embedding_query(engine: Engine, body: EmbeddingRequest):
    """The embedding route's checks past the model: the (n, 512) queries and their QueryOptions."""
    from geoindex.locate.options import validate_embeddings

    options = options_of(engine, body)
    return validate_embeddings(body.embeddings), options


def embedding_request(engine: Engine, data: bytes):
    """A JSON body as the embedding route takes it (orjson, then the model; :mod:`geoindex.serve.fastpath`)."""
    return embedding_query(engine, EmbeddingRequest.model_validate(orjson.loads(data)))
