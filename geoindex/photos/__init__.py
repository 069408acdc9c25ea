"""Reference photos as evidence: a gallery of geotagged photo embeddings beside the cell gallery.

``build_photos`` (:mod:`.build`) turns a photos CSV (or a ``geoindex train features`` cache) into a
reference directory REF; :class:`PhotoGallery` (:mod:`.gallery`) opens it and returns each query's
nearest reference photos; :func:`fuse` (:mod:`.fusion`) combines them with the cell posterior;
:func:`open_photos` (:mod:`.evidence`) gives a gallery to a Geolocator
(``Geolocator(DIR, evidence=open_photos(REF))``).
"""

from geoindex.photos.evidence import PhotoEvidence, open_photos
from geoindex.photos.fusion import FusionSettings, Neighbour, fuse
from geoindex.photos.gallery import PhotoGallery

__all__ = ["FusionSettings", "Neighbour", "PhotoEvidence", "PhotoGallery", "fuse", "open_photos"]
