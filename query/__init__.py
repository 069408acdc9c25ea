"""``geolocate``: the command-line front door of the query layer (:mod:`geoindex.geolocator`)."""

from query.cli import main

__all__ = ["main"]
