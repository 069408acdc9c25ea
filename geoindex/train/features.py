"""Moved to :mod:`geoindex.pipeline.image_features` (the photo gallery's build uses it too, and photos may not
import train: docs/architecture.md). This name stays one release: it *is* that module, so
``monkeypatch.setattr("geoindex.train.features.X", ...)`` still reaches the code that runs."""

import sys

from geoindex.pipeline import image_features

sys.modules[__name__] = image_features
