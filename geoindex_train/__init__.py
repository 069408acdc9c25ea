"""``geoindex-train``: fine-tune GeoCLIP on your own geotagged photos (see :mod:`geoindex.train`)."""
