"""Moved to :mod:`geoindex.pipeline.photo_csv` (the photo gallery's build uses it too, and photos may not
import train: docs/architecture.md). This name stays one release: it *is* that module, so
``monkeypatch.setattr("geoindex.train.photos.X", ...)`` still reaches the code that runs."""

import sys

from geoindex.pipeline import photo_csv

sys.modules[__name__] = photo_csv
