"""The web page at ``/`` and its files at ``/static/``: built by ``web/`` (``npm ci && npm run build``)
into this package's ``static/`` folder, from the npm lock file; nothing comes from a CDN at run time.

The page is not part of the API: its routes stay out of the OpenAPI schema. A server whose page was
never built still starts and answers the API; ``/`` and ``/static/`` then answer 503 saying how to
build it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import orjson
from fastapi import FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

from geoindex.serve.http import error_response

STATIC_DIR = Path(__file__).parent / "static"  # read when an app is made: tests point it elsewhere
BUILD_HINT = "cd web && npm ci && npm run build"


def _not_built(directory: Path) -> Response:
    return error_response(503, "PageNotBuilt", f"the web page is not built ({directory / 'index.html'} is missing): "
                                               f"run `{BUILD_HINT}` in the repository, or `make install`")


def tile_source(template: str | None) -> str:
    """The CSP source that admits a tile URL template's images: its scheme and host (``{s}``
    subdomains as ``*.``), or just its scheme when the host itself is templated; "" without tiles."""
    if not template:
        return ""
    parts = urlsplit(template.replace("{s}.", "*.").replace("{s}", "*"))
    if parts.scheme not in ("http", "https"):
        return ""
    host = parts.netloc.rsplit("@", 1)[-1]
    if not host or any(c in host for c in "{} ;'\""):
        return f"{parts.scheme}:"
    return f"{parts.scheme}://{host}"


def content_security_policy(tiles: str | None) -> str:
    """The page may load scripts, styles, data and requests from this server only; images also from
    the tile server when one is configured (blob: for photo thumbnails, data: for Leaflet's own)."""
    images = " ".join(filter(None, ("'self'", "data:", "blob:", tile_source(tiles))))
    return ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src {images}; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'self'")


class _StaticIfBuilt:
    """StaticFiles over the built folder, or 503 (never a 500) while it does not exist."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.files = StaticFiles(directory=directory, check_dir=False)

    async def __call__(self, scope, receive, send):
        if not (self.directory / "index.html").is_file():
            return await _not_built(self.directory)(scope, receive, send)
        await self.files(scope, receive, send)


def mount_web(app: FastAPI, settings) -> None:
    """Serve the built page at ``/``, its files at ``/static/``, and the page's settings at
    ``/config.json`` (the tile URL, this server's limits); none of them in the OpenAPI schema."""
    directory = STATIC_DIR
    csp = content_security_policy(settings.tiles)
    config = orjson.dumps({"tiles": settings.tiles, "max_top_k": settings.max_top_k,
                           "max_images": settings.max_images})

    @app.get("/", include_in_schema=False)
    async def page():
        index = directory / "index.html"
        if not index.is_file():
            return _not_built(directory)
        return FileResponse(index, media_type="text/html; charset=utf-8",
                            headers={"content-security-policy": csp, "cache-control": "no-cache",
                                     "x-content-type-options": "nosniff"})

    @app.get("/config.json", include_in_schema=False)
    async def page_config():
        return Response(config, media_type="application/json", headers={"cache-control": "no-cache"})

    app.mount("/static", _StaticIfBuilt(directory), name="static")
