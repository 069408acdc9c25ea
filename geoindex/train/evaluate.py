"""Renamed :mod:`geoindex.train.accuracy` (beside :mod:`geoindex.train.evaluation`, two modules
named "evaluate" and "evaluation" read as one thing). This name stays one release: it *is* that module."""

import sys

from geoindex.train import accuracy

sys.modules[__name__] = accuracy
