"""Reference photo images for the page: ``GET /v1/photos/{id}/image``, served only from ``--photos-root``.

A request names a photo by its id in the reference gallery, never by a path: the path comes from the
gallery's own table (the CSV's path, taken from ``--photos-root`` when relative), and is served only
when it resolves (symbolic links followed) to a regular image file inside ``--photos-root``. Anything
else answers 404 with the same words, so the route cannot be used to probe the file system.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import FastAPI, Path
from starlette.responses import FileResponse

from geoindex.errors import InvalidArgumentError
from geoindex.serve.http import error_response
from geoindex.serve.schema import refusals

IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
               ".gif": "image/gif", ".bmp": "image/bmp"}


def photo_file(root: FilePath, image: str) -> FilePath | None:
    """The file to serve for a photo whose CSV path is ``image``, or None unless it is a regular
    image file whose real path lies inside the real ``root``."""
    candidate = FilePath(image)
    candidate = candidate if candidate.is_absolute() else root / candidate
    real = FilePath(os.path.realpath(candidate))
    if not real.is_relative_to(root) or real.suffix.lower() not in IMAGE_TYPES or not real.is_file():
        return None
    return real


def photos_root_of(settings) -> FilePath | None:
    """The real path of ``--photos-root`` (None without it); InvalidArgumentError before the port opens
    when it is not a folder or comes without --photos."""
    if settings.photos_root is None:
        return None
    if settings.photos is None:
        raise InvalidArgumentError("--photos-root serves reference photos: give --photos REF too")
    root = FilePath(os.path.realpath(settings.photos_root))
    if not root.is_dir():
        raise InvalidArgumentError(f"--photos-root {settings.photos_root!r} is not a folder: give the folder "
                                   "the reference photos are in")
    return root


def mount_photos(app: FastAPI, engine, settings) -> None:
    """The image route (when the server has --photos) and a summary of the reference gallery."""
    gallery, root = engine.photos and engine.photos.gallery, photos_root_of(settings)
    if gallery is None:
        return

    @app.get("/v1/photos", summary="What the reference photo gallery is")
    async def photos_summary():
        return {**gallery.summary(), "images_served": root is not None}

    @app.get("/v1/photos/{photo_id}/image", summary="A reference photo's image (only from --photos-root)",
             responses={200: {"content": {t: {} for t in sorted(set(IMAGE_TYPES.values()))}}, **refusals(404, 422)})
    async def photo_image(photo_id: Annotated[int, Path(ge=0, le=2**62, description="a neighbour's id")]):
        if root is None:
            return error_response(404, "NotFound", "this server serves no reference photo images: restart it "
                                                   "with --photos-root DIR")
        records = await asyncio.get_running_loop().run_in_executor(engine.search_pool, gallery.records, [photo_id])
        found = photo_file(root, records[0].image) if records else None
        if found is None:
            return error_response(404, "NotFound", f"reference photo {photo_id} has no image under --photos-root")
        return FileResponse(found, media_type=IMAGE_TYPES[found.suffix.lower()],
                            headers={"cache-control": "max-age=3600", "x-content-type-options": "nosniff"})
