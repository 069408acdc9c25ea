"""The FastAPI application, assembled: the routers of :mod:`geoindex.serve.routes` over one engine,
the error handlers, the limits in the OpenAPI schema, and the middleware.

Models and the index are loaded once (:class:`Engine`) and warmed before the app reports ready;
inference and FAISS search run off the event loop in bounded thread pools (a search known to take
under a millisecond runs on the loop: :meth:`Engine.locate`); image and text encoding
go through micro-batchers. Every bad input is a 4xx with a JSON body
``{"error": {"status", "type", "message"}}``; the server keeps serving.
"""

import asyncio
import contextlib
import os

from fastapi import FastAPI

from geoindex.serve import fastpath
from geoindex.serve.engine import Engine
from geoindex.serve.errors import HANDLERS
from geoindex.serve.http import BodyLimit, OrjsonRoute
from geoindex.serve.metrics import Metrics, MetricsMiddleware
from geoindex.serve.requests import stamp_limits
from geoindex.serve.routes import cells, embed, health, locate, photos, places
from geoindex.serve.settings import ENV_VAR, ServeSettings
from geoindex.serve.warmup import warm_routes
from geoindex.serve.web import Page, static_files
from geoindex.serve.web import router as page_router

DESCRIPTION = "Where was this photo taken? GeoCLIP embeddings of dense H3 galleries, searched with FAISS."


def create_app(settings: ServeSettings, engine: Engine | None = None) -> FastAPI:
    """Build the app; loads the engine now (refusing to start on a bad index) unless one is given.
    The engine is warmed (one encode, one search) in the lifespan's start, before the port opens."""
    engine = engine or Engine(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.get_running_loop().run_in_executor(None, engine.warm)
        await warm_routes(app)
        app.state.ready = True
        yield
        await engine.close()

    app = FastAPI(title="geoindex", version=_version(), description=DESCRIPTION, lifespan=lifespan,
                  exception_handlers=HANDLERS)
    app.router.route_class = OrjsonRoute
    app.state.engine, app.state.metrics, app.state.ready = engine, Metrics(), engine.warmed
    app.state.page = Page.of(settings, engine.capabilities())
    engine.image_batcher.on_batch = engine.text_batcher.on_batch = app.state.metrics.batch_items.observe
    for router in (locate.router, embed.router, cells.router, places.router, health.router, page_router):
        app.include_router(router)
    if engine.photos is not None:
        app.include_router(photos.router)
    app.mount("/static", static_files(app.state.page), name="static")
    app.openapi = lambda: stamp_limits(FastAPI.openapi(app), engine.limits)
    shortcut = next(r for r in locate.router.routes if r.path == fastpath.PATH)
    app.add_middleware(fastpath.EmbeddingShortcut, engine=engine, route=shortcut)  # inside the body limit
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, timeout=settings.body_timeout)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def _version() -> str:
    from geoindex.constants import __version__

    return __version__


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: settings come from $GEOINDEX_SERVE_SETTINGS."""
    return create_app(ServeSettings.from_json(os.environ[ENV_VAR]))
