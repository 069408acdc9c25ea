"""geoindex: planet-scale image geolocation as a vector database, built on GeoCLIP.

The library follows the data flow, one subpackage a stage:

- :mod:`geoindex.cells`: H3 galleries (or CSV rows), land mask, reverse geocoding, H3 ids;
- :mod:`geoindex.encoders`: the GeoCLIP location encoder, CLIP + GeoCLIP head, image reading;
- :mod:`geoindex.index`: FAISS factory strings, search settings, IVFH3 lists, train/add;
- :mod:`geoindex.store`: the index directory (manifest, DuckDB cells, hot columns, shards);
- :mod:`geoindex.pipeline`: the streaming, resumable builder;
- :mod:`geoindex.locate`: the Geolocator (search, probabilities, regions, re-ranking, GeoJSON).

The entry points are importable from here (``from geoindex import Geolocator, QueryOptions``);
they load on first use, so ``import geoindex`` stays light. No CLI or web framework is imported.
"""

from __future__ import annotations

import importlib
import os

from geoindex.constants import __version__

# MKL's strict reproducible mode: each vector the location encoder gives is then the same bits
# whatever the batch around it and the thread count (by default MKL's small-batch GEMM kernels
# differ in the last bit with both, so a Ray actor with one thread and a 2-thread process encoded
# the same shard differently). Measured: no loss of speed on AVX-512. It must be set before
# torch's first matrix product, hence here; a value the user set wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

# name -> (module, attribute)
_EXPORTS = {
    "Geolocator": ("geoindex.locate.geolocator", "Geolocator"),
    "QueryOptions": ("geoindex.locate.options", "QueryOptions"),
    "LocateResult": ("geoindex.locate.options", "LocateResult"),
    "Prediction": ("geoindex.locate.options", "Prediction"),
    "results_to_geojson": ("geoindex.locate.geojson", "results_to_geojson"),
    "make_filter": ("geoindex.locate.regions", "make_filter"),
    "SearchSettings": ("geoindex.index.search", "SearchSettings"),
    "BuildConfig": ("geoindex.pipeline.config", "BuildConfig"),
    "build_gallery": ("geoindex.pipeline.pipeline", "build"),
    "load_image_encoder": ("geoindex.encoders.clip", "load_image_encoder"),
    "load_image": ("geoindex.encoders.images", "load_image"),
    "load_location_encoder": ("geoindex.encoders.location", "load_location_encoder"),
    "encode_latlng": ("geoindex.encoders.location", "encode_latlng"),
    "open_index_dir": ("geoindex.store.manifest", "open_index_dir"),
}
__all__ = ["__version__", *_EXPORTS]

# older public names, kept one release with a DeprecationWarning: old name -> new name
_RENAMED = {
    "build_index": "build_gallery",  # build_index is also the front-door script and the CLI's old name
}


def __getattr__(name: str):
    if name in _RENAMED:
        import warnings

        new = _RENAMED[name]
        warnings.warn(f"geoindex.{name} is renamed geoindex.{new}; the old name goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return __getattr__(new)
    if name not in _EXPORTS:
        raise AttributeError(f"module 'geoindex' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
