"""Labels are geography: a cell's country is the admin-0 polygon its centre lies in (or, offshore,
within one cell's radius of), its place the nearest place of that country (issue 34, item 1)."""

import duckdb
import h3
import numpy as np
import pytest
import shapely

from geoindex.cells import countries
from geoindex.cells.countries import LABEL_VERSION, cell_radius_km, fix_ring, point_countries
from geoindex.cells.geocode import haversine_km, places, reverse_geocode
from geoindex.cli.build import main as build_main
from geoindex.locate.geolocator import Geolocator


def read_cells(index_dir):
    con = duckdb.connect(str(index_dir / "cells.duckdb"), read_only=True)
    try:
        return con.execute("SELECT cell, lat, lng, country, admin1, place, place_km FROM cells ORDER BY cell").df()
    finally:
        con.close()


def boundary_km(code: str, lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    """An upper bound on each point's great-circle km to the polygons labelled ``code``, found
    apart from the labeller: the distance to the nearest point of boundaries segmentized by shapely
    to 0.05 deg (so at most ~3 km more than the true distance)."""
    from scipy.spatial import cKDTree

    b = countries.boundaries()
    rings = [shapely.segmentize(r, 0.05) for part in b.parts[b.code == code] for r in shapely.get_rings(part)]
    xy = np.concatenate([shapely.get_coordinates(r) for r in rings])
    _, i = cKDTree(countries.latlng_to_xyz(xy[:, 1], xy[:, 0])).query(countries.latlng_to_xyz(lat, lng))
    return haversine_km(lat, lng, xy[i, 1], xy[i, 0])


def check_geography(cells, resolution: int) -> None:
    """No cell south of -60 is AU or NO; every labelled cell lies in its country's polygon or within
    one cell's radius of it; every place is the nearest place of the cell's country."""
    south = cells.lat < -60
    assert not cells[south].country.isin(["AU", "NO"]).any()
    assert (cells[south].country.dropna() == "AQ").all() and (cells[south].country == "AQ").any()
    b = countries.boundaries()
    labelled = cells[cells.country.notna()]
    for code, group in labelled.groupby("country"):
        polys = list(b.parts[b.code == code])
        lat, lng = group.lat.to_numpy(), group.lng.to_numpy()
        inside = np.zeros(len(group), dtype=bool)
        for poly in polys:
            inside |= shapely.contains_xy(poly, lng, lat)
        if (~inside).any():
            assert (boundary_km(code, lat[~inside], lng[~inside]) <= cell_radius_km(resolution) + 3.0).all(), code
    p = places()
    sample = labelled[labelled.place.notna()].sample(min(200, len(labelled)), random_state=0)
    for row in sample.itertuples():
        mine = p.country == row.country
        d = haversine_km(row.lat, row.lng, p.lat[mine], p.lng[mine])
        assert p.name[mine][np.argmin(d)] == row.place and abs(d.min() - row.place_km) < 0.01


def test_named_regions_get_their_own_codes():
    """Svalbard, Greenland's interior, the Sahara, Antarctica (and the pole), Chukotka and Fiji
    either side of the antimeridian, Kosovo (no ISO id in world-atlas); open ocean has none."""
    points = {"SJ": (78.5, 16.5), "GL": (72.0, -40.0), "DZ": (24.0, 3.0), "LY": (25.0, 20.0),
              "AQ": (-75.0, 120.0), "RU": (66.0, -175.0), "FJ": (-16.5, -179.95), "XK": (42.66, 21.16),
              "GF": (4.9, -52.3), "NO": (61.0, 9.0), "AU": (-25.0, 134.0)}
    lat = np.array([v[0] for v in points.values()] + [-89.9, 0.0])
    lng = np.array([v[1] for v in points.values()] + [45.0, -30.0])
    assert point_countries(lat, lng).tolist() == [*points, "AQ", None]
    geo = reverse_geocode(lat, lng)
    assert geo.place[list(points).index("AQ")] is None and np.isnan(geo.place_km[list(points).index("AQ")])
    assert geo.place[-1] is not None and geo.country[-1] is None and geo.admin1[-1] is None  # orientation at sea
    assert geo.place[0] == "Longyearbyen"


def test_offshore_centres_snap_within_the_given_radius():
    lat, lng = np.array([-33.86]), np.array([151.33])  # ~3 km off Sydney's coast
    assert point_countries(lat, lng, 0.0).tolist() == [None]
    assert point_countries(lat, lng, 10.0).tolist() == ["AU"]


def test_a_ring_round_the_pole_is_closed_over_it():
    lng = np.linspace(-180, 179, 50)
    ring = np.column_stack([np.r_[lng, -180.0], np.r_[np.full(50, -70.0), -70.0]])
    poly = shapely.Polygon(fix_ring(ring))
    assert shapely.contains_xy(poly, [0.0, 120.0, -179.9], [-89.0, -80.0, -75.0]).all()
    assert not shapely.contains_xy(poly, 0.0, -60.0)


def test_the_shared_r2_index_follows_the_polygons(built_r2):
    check_geography(read_cells(built_r2), 2)


def test_an_index_with_old_labels_says_so_once_and_loads(built_r2, index_copy, caplog):
    import json

    old = index_copy(built_r2)
    manifest = json.loads((old / "manifest.json").read_text())
    assert manifest["labels"]["version"] == LABEL_VERSION
    del manifest["labels"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING"):
        Geolocator(old, verify="none")
        Geolocator(old, verify="none")
    notes = [r for r in caplog.records if "label version 1" in r.getMessage()]
    assert len(notes) == 1 and "Rebuild" in notes[0].getMessage()


@pytest.mark.slow
def test_res3_global_and_regional_au_no(tmp_path):
    """The issue's acceptance test at res 3: global land, `--country AU`, `--country NO`."""
    glob = tmp_path / "g"
    assert build_main(["--resolution", "3", "--out", str(glob), "--no-progress", "-q"]) == 0
    cells = read_cells(glob)
    check_geography(cells, 3)
    for code, where in {"SJ": (78.5, 16.5), "GL": (72.0, -40.0), "AQ": (-80.0, 60.0)}.items():
        cell = h3.str_to_int(h3.latlng_to_cell(*where, 3))
        assert cells.set_index("cell").loc[cell, "country"] == code
    sahara = cells[(cells.lat.between(20, 28)) & (cells.lng.between(-5, 25))]
    assert set(sahara.country.dropna()) <= {"DZ", "LY", "NE", "ML", "TD", "EG", "SD", "MR"}
    out = tmp_path / "au-no"  # one regional build for both: exactly the global index's AU and NO cells
    assert build_main(["--resolution", "3", "--country", "AU", "--country", "NO", "--out", str(out),
                       "--no-progress", "-q"]) == 0
    regional = read_cells(out)
    assert set(regional.cell) == set(cells[cells.country.isin(["AU", "NO"])].cell) and regional.lat.min() > -60


def test_inspect_lookup_shows_the_labels(built_r2, capsys):
    from geoindex.cli.inspect import main as inspect_main

    assert inspect_main([str(built_r2), "--lookup=-75,120", "--lookup=78.5,16.5", "-k", "1"]) == 0
    out = capsys.readouterr().out
    assert f"labels: version {LABEL_VERSION}" in out
    assert "lookup -75.0000, 120.0000: AQ / -- / --" in out and "lookup 78.5000, 16.5000: SJ / Svalbard /" in out


@pytest.mark.slow
def test_a_csv_gallery_is_labelled_by_the_same_rule(tmp_path):
    points = [(-75.0, 120.0), (78.5, 16.5), (-33.86, 151.33), (0.0, -30.0), (42.66, 21.16)]
    csv = tmp_path / "g.csv"
    csv.write_text("lat,lng\n" + "".join(f"{a},{b}\n" for a, b in points))
    out = tmp_path / "csv-idx"
    assert build_main(["--gallery-csv", str(csv), "--out", str(out), "--no-progress", "-q"]) == 0
    cells = read_cells(out)
    stored = [c if isinstance(c, str) else None for c in cells.country]
    lat, lng = np.array(points).T
    assert stored == reverse_geocode(lat, lng).country.tolist()  # a CSV row is a loose point: 5 km offshore
    assert stored == ["AQ", "SJ", "AU", None, "XK"] and not isinstance(cells.place[0], str)
