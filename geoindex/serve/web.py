"""The web page at ``/`` and its files at ``/static/``: built by ``web/`` (``npm ci && npm run build``)
into this package's ``static/`` folder, from the npm lock file; nothing comes from a CDN at run time.

The page is not part of the API: its routes stay out of the OpenAPI schema. A server whose page was
never built still starts and answers the API; ``/`` and ``/static/`` then answer 503 saying how to
build it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Depends, Request
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


@dataclass(frozen=True)
class Page:
    """What the page routes serve, fixed when the app is assembled: the built folder, the CSP, and
    the page's settings (``/config.json``)."""

    directory: Path
    csp: str
    config: bytes

    @classmethod
    def of(cls, settings, capabilities: dict | None = None) -> Page:
        config = {"tiles": settings.tiles, "max_top_k": settings.max_top_k, "max_images": settings.max_images,
                  "max_request_bytes": settings.max_request_bytes,
                  "max_decoded_bytes": settings.max_decoded_bytes, "max_pixels": settings.max_pixels,
                  **(capabilities or {})}
        return cls(STATIC_DIR, content_security_policy(settings.tiles), orjson.dumps(config))


async def get_page(request: Request) -> Page:  # async: no thread hop (routes/__init__.py)
    return request.app.state.page


router = APIRouter(include_in_schema=False)


@router.get("/")
async def page(p: Annotated[Page, Depends(get_page)]):
    index = p.directory / "index.html"
    if not index.is_file():
        return _not_built(p.directory)
    return FileResponse(index, media_type="text/html; charset=utf-8",
                        headers={"content-security-policy": p.csp, "cache-control": "no-cache",
                                 "x-content-type-options": "nosniff"})


@router.get("/config.json")
async def page_config(p: Annotated[Page, Depends(get_page)]):
    return Response(p.config, media_type="application/json", headers={"cache-control": "no-cache"})


def static_files(page: Page) -> _StaticIfBuilt:
    """The app mounted at ``/static`` (routers cannot carry a mount)."""
    return _StaticIfBuilt(page.directory)
