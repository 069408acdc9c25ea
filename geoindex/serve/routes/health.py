"""Liveness (``/healthz``), readiness (``/readyz``: 200 only once every model and the index are warm)
and Prometheus metrics (``/metrics``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import PlainTextResponse

from geoindex.serve.engine import Engine
from geoindex.serve.http import OrjsonRoute, error_response
from geoindex.serve.integrity import STATES
from geoindex.serve.metrics import Metrics
from geoindex.serve.routes import get_engine, get_metrics
from geoindex.serve.schema import refusals

router = APIRouter(tags=["health"], route_class=OrjsonRoute)
EngineDep = Annotated[Engine, Depends(get_engine)]


@router.get("/healthz", summary="Liveness, and the index's integrity", responses=refusals(503))
async def healthz(engine: EngineDep):
    check = engine.integrity.report()
    if check["state"] == "corrupt":
        return error_response(503, "IndexCorrupt", check["error"], {"integrity": check})
    return {"status": "ok", "integrity": check}


@router.get("/readyz", summary="Readiness: index and models loaded and warmed, index not corrupt",
            responses=refusals(503))
async def readyz(request: Request, engine: EngineDep):
    if not request.app.state.ready:
        return error_response(503, "NotReady", "loading")
    if engine.integrity.state == "corrupt":
        return error_response(503, "IndexCorrupt", engine.integrity.error)
    return {"status": "ready", "images": engine.encoder is not None, "integrity": engine.integrity.state}


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics_route(engine: EngineDep, metrics: Annotated[Metrics, Depends(get_metrics)]):
    metrics.integrity.set(STATES[engine.integrity.state])
    metrics.decoded_bytes.set(engine.decode_budget.in_use)
    return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
