"""Confidence regions as RFC 7946 GeoJSON where H3 cells meet the antimeridian and the poles."""

import h3
import numpy as np
import pytest
from shapely.geometry import Point, shape

from geoindex import Geolocator, QueryOptions
from geoindex.encoders.location import encode_latlng
from geoindex.locate.geojson import cells_to_geometry

PLACES = {  # lat, lng, whether the region holds a pole
    "Taveuni": (-16.8, 179.9, False),
    "Chukotka": (66.0, -179.5, False),
    "South Pole": (-89.0, 0.0, True),
    "North Pole": (89.5, 10.0, True),
}


def check_rfc7946(geometry: dict, holds_pole: bool):
    geom = shape(geometry)
    assert geom.is_valid, geometry
    polygons = list(getattr(geom, "geoms", [geom]))
    for poly in polygons:
        assert poly.exterior.is_ccw  # right-hand rule: exterior rings counter-clockwise
        assert all(not ring.is_ccw for ring in poly.interiors)
        west, south, east, north = poly.bounds
        assert -180 <= west and east <= 180 and -90 <= south and north <= 90
        # a part that is not a polar cap never spans the globe: it was cut at the antimeridian
        assert east - west < 180 or holds_pole
    return geom


@pytest.mark.parametrize("name", PLACES)
@pytest.mark.parametrize("res", [1, 2, 3])
def test_cells_around_the_antimeridian_and_poles(name, res):
    lat, lng, pole = PLACES[name]
    centre = h3.latlng_to_cell(lat, lng, res)
    geom = check_rfc7946(cells_to_geometry(list(h3.grid_disk(centre, 1))), pole)
    assert geom.intersects(Point(lng, lat))
    if pole:
        assert geom.intersects(Point(123.0, 90.0 if lat > 0 else -90.0))  # the pole itself is inside
        assert geom.bounds[0] == -180 and geom.bounds[2] == 180


def test_ordinary_regions_are_h3_unions():
    cells = list(h3.grid_disk(h3.latlng_to_cell(48.85, 2.29, 3), 2))
    assert cells_to_geometry(cells) == h3.cells_to_geo(cells)


def test_confidence_regions_of_these_places(built_r2, encoder):
    geo = Geolocator(built_r2)
    xq = encode_latlng(encoder, np.array([[lat, lng] for lat, lng, _ in PLACES.values()]))
    results = geo.locate(xq, QueryOptions(k=3, confidence=0.9))
    crossing = 0
    for (name, (lat, lng, pole)), result in zip(PLACES.items(), results):
        region = result.confidence_region
        check_rfc7946(region["geometry"], pole or any(
            h3.latlng_to_cell(p, 0, 2) in region["properties"]["cells"] for p in (90, -90)))
        crossing += region["geometry"]["type"] == "MultiPolygon"
    assert crossing >= 1  # at least one of these regions was cut at the antimeridian
