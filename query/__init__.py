"""``geolocate``: the command-line front door of the query layer (:mod:`geoindex.locate.geolocator`)."""

from query.cli import main

__all__ = ["main"]
