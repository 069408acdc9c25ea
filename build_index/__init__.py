"""``build_index``: the command-line front door of :mod:`geoindex.build.pipeline`."""

from build_index.cli import main

__all__ = ["main"]
