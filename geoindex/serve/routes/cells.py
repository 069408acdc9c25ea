"""What the index is and holds: ``GET /v1/index`` and one cell's row, ``GET /v1/cells/{cell}``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path
from starlette.responses import Response

from geoindex.serve.engine import Engine
from geoindex.serve.http import OrjsonRoute, error_response
from geoindex.serve.routes import get_engine
from geoindex.serve.schema import H3_OR_DECIMAL, refusals

router = APIRouter(tags=["index"], route_class=OrjsonRoute)
EngineDep = Annotated[Engine, Depends(get_engine)]


@router.get("/v1/cells/{cell}", summary="One cell's metadata", responses={
    200: {"description": "the cell's row: cell, res, lat, lng, country, admin1, place, ..."}, **refusals(404, 422)})
async def get_cell(cell: Annotated[str, Path(pattern=H3_OR_DECIMAL, description="H3 id, hex or decimal")],
                   engine: EngineDep):
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


@router.get("/v1/index", summary="What this index is")
async def index_summary(engine: EngineDep):
    summary = {**engine.geolocator.summary(), "image_encoder": engine.encoder_info()}
    return Response(orjson.dumps(summary), media_type="application/json")
