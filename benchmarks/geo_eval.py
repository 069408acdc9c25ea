"""Shared evaluation of geolocation errors: distance thresholds, accuracy table, galleries.

The standard image-geolocation thresholds (street 1 km, city 25 km, region 200 km, country
750 km, continent 2500 km), GeoCLIP's published Im2GPS3k numbers, and the 100K-gallery baseline
(GeoCLIP's own gallery as a Flat index over its location embeddings).
"""

from __future__ import annotations

import numpy as np

from geoindex.train.accuracy import THRESHOLDS_KM, accuracy_table  # noqa: F401 (the benchmarks' import)

GEOCLIP_IM2GPS3K = {"1": 14.11, "25": 34.47, "200": 50.65, "750": 69.67, "2500": 83.82}  # % (paper, Table 1)


class Gallery100K:
    """GeoCLIP's 100K gallery as an exact (Flat) index over its location embeddings."""

    def __init__(self, weights=None):
        """``weights``: a GeoCLIP weights folder (default the released weights)."""
        import faiss

        from geoindex.cells.csv_gallery import read_gallery_csv
        from geoindex.encoders.location import encode_latlng, load_location_encoder
        from geoindex.encoders.weights import gallery_100k_path

        self.latlng = read_gallery_csv(gallery_100k_path())
        self.vectors = encode_latlng(load_location_encoder(weights=weights), self.latlng)
        self.index = faiss.IndexFlatIP(512)
        self.index.add(self.vectors)

    def top1_latlng(self, xq: np.ndarray, exclude_rows: np.ndarray | None = None) -> np.ndarray:
        """(n, 2) lat, lng of each query's best gallery point; ``exclude_rows`` (n,) skips the
        query's own row (leave-one-out when the queries are gallery points)."""
        _, I = self.index.search(np.ascontiguousarray(xq, dtype=np.float32), 2)
        best = I[:, 0]
        if exclude_rows is not None:
            best = np.where(I[:, 0] == exclude_rows, I[:, 1], I[:, 0])
        return self.latlng[best]
