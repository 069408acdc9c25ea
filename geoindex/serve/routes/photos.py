"""The reference photo gallery (servers run with ``--photos``): ``GET /v1/photos`` and a photo's image,
``GET /v1/photos/{id}/image``, served only from ``--photos-root`` (see :mod:`geoindex.serve.photos`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from starlette.responses import FileResponse

from geoindex.serve.engine import Engine
from geoindex.serve.http import OrjsonRoute, error_response
from geoindex.serve.photos import IMAGE_TYPES, photo_file
from geoindex.serve.routes import get_engine
from geoindex.serve.schema import refusals

router = APIRouter(tags=["photos"], route_class=OrjsonRoute)
EngineDep = Annotated[Engine, Depends(get_engine)]


@router.get("/v1/photos", summary="What the reference photo gallery is")
async def photos_summary(engine: EngineDep):
    return {**engine.photos.gallery.summary(), "images_served": engine.photos_root is not None}


@router.get("/v1/photos/{photo_id}/image", summary="A reference photo's image (only from --photos-root)",
            responses={200: {"content": {t: {} for t in sorted(set(IMAGE_TYPES.values()))}}, **refusals(404, 422)})
async def photo_image(photo_id: Annotated[int, Path(ge=0, le=2**62, description="a neighbour's id")],
                      engine: EngineDep):
    root = engine.photos_root
    if root is None:
        return error_response(404, "NotFound", "this server serves no reference photo images: restart it "
                                               "with --photos-root DIR")
    gallery = engine.photos.gallery
    records = await asyncio.get_running_loop().run_in_executor(engine.search_pool, gallery.records, [photo_id])
    found = photo_file(root, records[0].image) if records else None
    if found is None:
        return error_response(404, "NotFound", f"reference photo {photo_id} has no image under --photos-root")
    return FileResponse(found, media_type=IMAGE_TYPES[found.suffix.lower()],
                        headers={"cache-control": "max-age=3600", "x-content-type-options": "nosniff"})
