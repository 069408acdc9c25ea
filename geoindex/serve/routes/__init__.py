"""The server's routes, one ``APIRouter`` per resource, each taking the engine from :func:`get_engine`:

- ``locate``: ``POST /v1/locate`` (images), ``/v1/locate/text``, ``/v1/locate/embedding``;
- ``embed``: ``POST /v1/embed/locations``;
- ``cells``: ``GET /v1/index``, ``/v1/cells/{cell}``;
- ``places``: ``GET /v1/places`` (named places in a box, for the page's map labels);
- ``photos``: the reference photo gallery (mounted only when the server has ``--photos``);
- ``health``: ``/healthz``, ``/readyz``, ``/metrics``;
- ``page``: the web page at ``/`` and its ``/config.json`` (outside the OpenAPI schema).

A router is tested alone by mounting it on a bare ``FastAPI()`` and overriding :func:`get_engine`.
"""

from fastapi import Request


# The dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a
# thread hop on every request for one attribute read (issue 36: ~0.1-0.3 ms of a 1 ms request).
async def get_engine(request: Request):
    """The :class:`~geoindex.serve.engine.Engine` this app was assembled with (a dependency)."""
    return request.app.state.engine


async def get_metrics(request: Request):
    """The app's :class:`~geoindex.serve.metrics.Metrics` (a dependency)."""
    return request.app.state.metrics
