"""geoindex: planet-scale image geolocation as a vector database, built on GeoCLIP.

The library: H3 galleries (:mod:`geoindex.gallery`), the GeoCLIP location encoder
(:mod:`geoindex.location_encoder`), FAISS indexes (:mod:`geoindex.faiss_index`), DuckDB cell
metadata (:mod:`geoindex.metadata`), the index directory contract (:mod:`geoindex.manifest`) and
the streaming builder (:mod:`geoindex.build`). No CLI or web framework is imported here.
"""

__version__ = "0.1.0"
