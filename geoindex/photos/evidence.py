"""Reference photos in a query: the photo gallery as an evidence source
(:class:`~geoindex.locate.evidence.EvidenceSource`) that a
:class:`~geoindex.locate.geolocator.Geolocator` takes as ``evidence=``.

:func:`open_photos` opens a gallery (it must have been encoded with the same GeoCLIP weights as the
queries); the Geolocator then asks :meth:`PhotoEvidence.neighbours` for each query's nearest
reference photos and :meth:`PhotoEvidence.fuse` for the fused answer (:mod:`geoindex.photos.fusion`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geoindex.hashing import sha256_file
from geoindex.photos.fusion import FusionSettings, Neighbour, fuse
from geoindex.photos.gallery import PhotoGallery


class PhotoEvidence:
    """A reference photo gallery and the fusion rule that combines its neighbours with the cells.

    Attributes:
        gallery: the opened :class:`~geoindex.photos.gallery.PhotoGallery`.
        fusion: the :class:`~geoindex.photos.fusion.FusionSettings` (may be replaced between calls).
    """

    def __init__(self, gallery: PhotoGallery, fusion: FusionSettings | None = None):
        self.gallery = gallery
        self.fusion = fusion or FusionSettings()

    @property
    def pool(self) -> int:
        return self.fusion.pool

    def neighbours(self, xq: np.ndarray, region=None) -> list[list[Neighbour]]:
        return neighbours_of(self.gallery, xq, self.fusion.k, region)

    def fuse(self, result, neighbours: list[Neighbour], k: int, resolution: int | None):
        from geoindex.cells.countries import cell_radius_km

        floor = 0.0 if resolution is None else cell_radius_km(resolution)
        return fuse(result, neighbours, self.fusion, k, _cell_of(resolution), floor)


def open_photos(path: str | Path, weights: str | Path | None = None, fusion: FusionSettings | None = None,
                verify: str = "small", small_file_bytes: int | None = None) -> PhotoEvidence:
    """The gallery at ``path`` as evidence, verified as the cell index is (``verify``,
    ``small_file_bytes``: see :class:`PhotoGallery`), refused when built with other GeoCLIP weights
    than ``weights`` (the ``--weights`` folder the queries use; default the released weights)."""
    from geoindex.encoders.weights import geoclip_files

    gallery = PhotoGallery(path, verify) if small_file_bytes is None else PhotoGallery(path, verify, small_file_bytes)
    files = geoclip_files(weights)
    gallery.check_encoder(None, sha256_file(files.image_head), sha256_file(files.location_encoder))
    return PhotoEvidence(gallery, fusion)


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
