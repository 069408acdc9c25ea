"""``POST /v1/embed/locations``: GeoCLIP location embeddings of coordinates, as features."""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends
from starlette.responses import Response

from geoindex.serve.engine import Engine
from geoindex.serve.http import OrjsonRoute
from geoindex.serve.requests import CoordinatesRequest, check_limits
from geoindex.serve.routes import get_engine
from geoindex.serve.schema import EmbeddingsResponse, refusals

router = APIRouter(tags=["embed"], route_class=OrjsonRoute)


@router.post("/v1/embed/locations", summary="GeoCLIP location embeddings of coordinates",
             response_model=EmbeddingsResponse, responses=refusals(408, 413, 415, 422))
async def embed_locations(body: CoordinatesRequest, engine: Annotated[Engine, Depends(get_engine)]):
    import numpy as np

    from geoindex.encoders.location import encode_latlng

    check_limits({"coordinates": body.coordinates}, engine.limits)
    latlng = np.asarray(body.coordinates, dtype=np.float64)
    encoder = engine.geolocator.encoder_reranker  # one location encoder per process, loaded on first use
    xb, inside = await asyncio.get_running_loop().run_in_executor(
        engine.search_pool, lambda: (encode_latlng(encoder.model, latlng),
                                     engine.geolocator.covers(latlng[:, 0], latlng[:, 1])))
    return Response(orjson.dumps({"embeddings": xb, "inside_region": inside}, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")
