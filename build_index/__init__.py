"""``build_index``: the front door that builds an index; ``geoindex build`` under the design's name
(the code is :mod:`geoindex.cli.build`)."""

from geoindex.cli import alias

main = alias("build_index")
