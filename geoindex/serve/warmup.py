"""Ready means warm: before the server reports ready (and before its port opens), one request of
each kind goes through the app's routes in process, so that what a first request pays once
(multipart parsing, validation, the batchers' loops, the answer's encoders, modules imported on
first use) is paid before any user waits. The engine's own warm-up (:meth:`Engine.warm`) runs first:
the models and the index, each in the thread that will use it."""

from __future__ import annotations

import io
import logging
import time

log = logging.getLogger("geoindex.serve")
WARM_UP = "geoindex.warm_up"  # the ASGI scope key of the warm-up requests


def _photo() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((320, 240), 64).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


async def warm_routes(app) -> None:
    """One request to each locate and embed route, through the whole ``app`` (marked in its ASGI scope,
    which no client can set, so the metrics count users' requests only); a failure is logged, never
    fatal (the routes answer it)."""
    import httpx

    engine = app.state.engine
    geo = engine.geolocator
    point = [float(geo.table.lat[0]), float(geo.table.lng[0])]

    async def marked(scope, receive, send):
        await app({**scope, WARM_UP: True}, receive, send)

    began = time.perf_counter()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=marked), base_url="http://warm-up") as c:
        confidence = {"confidence": 0.9} if geo.resolution is not None else {}
        requests = [c.post("/v1/embed/locations", json={"coordinates": [point]})]
        if engine.encoder is not None:
            requests += [
                c.post("/v1/locate", files={"images": ("warm-up.jpg", _photo(), "image/jpeg")},
                       data={"top_k": "5", **{k: str(v) for k, v in confidence.items()}}),
                c.post("/v1/locate/text", json={"texts": ["a harbour at dusk"], **confidence})]
        for request in requests:
            r = await request
            if r.status_code != 200:
                log.warning("warm-up request %s answered %d: %s", r.request.url.path, r.status_code, r.text[:300])
    log.info("warmed the routes in %.2f s", time.perf_counter() - began)
