"""``GET /v1/places?bbox=w,s,e,n``: the most populous named places in a box, for the page's offline
map labels (GeoNames ``cities1000``, the gazetteer the index's cells are labelled from; see
:mod:`geoindex.cells.geocode`)."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query

from geoindex.errors import InvalidQueryError
from geoindex.serve.engine import Engine
from geoindex.serve.http import OrjsonRoute
from geoindex.serve.routes import get_engine
from geoindex.serve.schema import BBOX_TEXT, refusals

router = APIRouter(tags=["index"], route_class=OrjsonRoute)
MAX_PLACES = 200


@functools.cache
def gazetteer() -> dict[str, np.ndarray]:
    """Every place, most populous first (loaded once per process, ~1 s)."""
    import gzip
    import json

    from geoindex.cells.geocode import _data_dir

    with gzip.open(_data_dir() / "geocode.gz") as f:
        rows = json.loads(f.read())
    rows.sort(key=lambda r: -int(r.get("population") or 0))
    return {"lat": np.array([r["latitude"] for r in rows]), "lng": np.array([r["longitude"] for r in rows]),
            "name": np.array([r["city"] for r in rows], dtype=object),
            "country": np.array([r["country_code"] for r in rows], dtype=object),
            "population": np.array([int(r.get("population") or 0) for r in rows])}


def places_in(w: float, s: float, e: float, n: float, limit: int) -> list[dict]:
    """The ``limit`` most populous places with s <= lat <= n and w <= lng <= e (w > e: across the antimeridian)."""
    g = gazetteer()
    inside_lng = (g["lng"] >= w) & (g["lng"] <= e) if w <= e else (g["lng"] >= w) | (g["lng"] <= e)
    idx = np.flatnonzero((g["lat"] >= s) & (g["lat"] <= n) & inside_lng)[:limit]
    return [{"name": g["name"][i], "lat": float(g["lat"][i]), "lng": float(g["lng"][i]),
             "country": g["country"][i], "population": int(g["population"][i])} for i in idx]


@router.get("/v1/places", summary="Named places in a box, most populous first (offline map labels)",
            responses=refusals(422))
async def places(engine: Annotated[Engine, Depends(get_engine)],
                 bbox: Annotated[str, Query(pattern=BBOX_TEXT, description="w,s,e,n in degrees; w > e crosses "
                                                                            "the antimeridian")],
                 limit: Annotated[int, Query(ge=1, le=MAX_PLACES, description="places at most")] = 50):
    w, s, e, n = (float(v) for v in bbox.split(","))
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s < n <= 90):
        raise InvalidQueryError(f"bbox = {bbox!r}: give west,south,east,north with -180 <= w, e <= 180 and "
                                "-90 <= s < n <= 90")
    found = await asyncio.get_running_loop().run_in_executor(engine.search_pool, places_in, w, s, e, n, limit)
    return {"places": found}
