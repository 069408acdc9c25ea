"""``geolocate``: the front door that answers queries; ``geoindex locate`` under the design's name
(the code is :mod:`geoindex.cli.locate`)."""

from geoindex.cli import alias

main = alias("geolocate")
