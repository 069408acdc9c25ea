"""Reference photos in a query: open a gallery for a :class:`~geoindex.locate.geolocator.Geolocator`
and attach each query's neighbours, fused with its cell result (:mod:`geoindex.photos.fusion`).

The Geolocator calls two functions and knows nothing else of photos: :func:`open_photos` when it
opens (the gallery must have been encoded with the same GeoCLIP weights as the queries) and
:func:`with_photos` after ranking its cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geoindex.photos.fusion import FusionSettings, Neighbour, fuse
from geoindex.photos.gallery import PhotoGallery


def open_photos(path: str | Path, weights: str | Path | None, fusion: FusionSettings | None,
                verify: str = "small", small_file_bytes: int | None = None) -> tuple[PhotoGallery, FusionSettings]:
    """The gallery at ``path``, verified as the cell index is (``verify``, ``small_file_bytes``: see
    :class:`PhotoGallery`), refused when built with other GeoCLIP weights than ``weights``."""
    from geoindex.encoders.weights import geoclip_files, sha256_file

    gallery = PhotoGallery(path, verify) if small_file_bytes is None else PhotoGallery(path, verify, small_file_bytes)
    files = geoclip_files(weights)
    gallery.check_encoder(None, sha256_file(files.image_head), sha256_file(files.location_encoder))
    return gallery, fusion or FusionSettings()


def _cell_of(resolution: int | None):
    if resolution is None:
        return None
    import h3

    def cell_of(lat: float, lng: float) -> tuple[int, str]:
        cell = h3.latlng_to_cell(lat, lng, resolution)
        return h3.str_to_int(cell), cell

    return cell_of


def neighbours_of(gallery: PhotoGallery, xq: np.ndarray, k: int, region=None) -> list[list[Neighbour]]:
    """Each query's k nearest reference photos, best first (inside ``region`` when given)."""
    D, I = gallery.search(xq, k, region or None)
    out = []
    for q in range(len(xq)):
        ok = I[q] >= 0
        records = gallery.records(I[q][ok])
        out.append([Neighbour(r.id, r.image, float(r.lat), float(r.lng), float(s), 0.0, r.metadata,
                              r.place, r.admin1, r.country) for r, s in zip(records, D[q][ok])])
    return out


def with_photos(geolocator, xq: np.ndarray, results: list, options) -> list:
    """The Geolocator's ranked results (each its fusion pool of predictions) -> fused results with
    ``options.k`` predictions and their neighbours."""
    found = neighbours_of(geolocator.photos, xq, geolocator.fusion.k, options.region)
    cell_of = _cell_of(geolocator.resolution if options.aggregate_res is None else options.aggregate_res)
    return [fuse(r, n, geolocator.fusion, options.k, cell_of) for r, n in zip(results, found)]
