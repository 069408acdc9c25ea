"""Constants every layer shares, in a module that imports nothing (no torch, no FAISS).

``EMBED_DIM``: the width of GeoCLIP's space, (n, 512) float32 for every embedding geoindex stores
or compares; ``__version__``: the package's version, as manifests record it.
"""

__version__ = "0.1.0"

EMBED_DIM = 512
