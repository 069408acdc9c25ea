"""Which reference photo images the server may send (``GET /v1/photos/{id}/image``, the route is in
:mod:`geoindex.serve.routes.photos`): only files under ``--photos-root``.

A request names a photo by its id in the reference gallery, never by a path: the path comes from the
gallery's own table (the CSV's path, taken from ``--photos-root`` when relative), and is served only
when it resolves (symbolic links followed) to a regular image file inside ``--photos-root``. Anything
else answers 404 with the same words, so the route cannot be used to probe the file system.
"""

from __future__ import annotations

import os
from pathlib import Path as FilePath

from geoindex.errors import InvalidArgumentError

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
