"""Moved to :mod:`geoindex.pipeline.augment` (the photo gallery's build uses it too, and photos may not
import train: docs/architecture.md). This name stays one release: it *is* that module, so
``monkeypatch.setattr("geoindex.train.augment.X", ...)`` still reaches the code that runs."""

import sys

from geoindex.pipeline import augment

sys.modules[__name__] = augment
