"""Moved to :mod:`geoindex.pipeline.image_features_ray` (the photo gallery's build uses it too, and photos may not
import train: docs/architecture.md). This name stays one release: it *is* that module, so
``monkeypatch.setattr("geoindex.train.ray_features.X", ...)`` still reaches the code that runs."""

import sys

from geoindex.pipeline import image_features_ray

sys.modules[__name__] = image_features_ray
