"""``geoindex-embed``: the command-line front door to :mod:`geoindex.encoders.location_files`."""
