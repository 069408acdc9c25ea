"""Regional builds (build_index --country / --bbox / --cells) and what queries say about their region."""

import json

import h3
import h3.api.numpy_int as h3n
import numpy as np
import pytest

from geoindex.cli.build import main as build_main
from geoindex.cli.inspect import main as inspect_main
from geoindex.cells.countries import cell_radius_km
from geoindex.cells.geocode import reverse_geocode
from geoindex.cells.h3ids import cell_to_parent
from geoindex.cells.region import cells_inside, make_filter, points_inside, shard_roots_in
from geoindex.index.factory import FLAT_MAX, regional_choice
from geoindex.locate.geolocator import Geolocator
from geoindex.locate.options import QueryOptions


def all_cells(res: int):
    cells = np.sort(np.concatenate([h3n.cell_to_children(c, res) for c in h3n.get_res0_cells()]).astype(np.int64))
    centres = np.array([h3n.cell_to_latlng(c) for c in cells])
    return cells, centres[:, 0], centres[:, 1]


@pytest.mark.parametrize("region", [
    make_filter(countries=["CH", "LU"]),             # small countries: the distance bound must not lose an edge cell
    make_filter(countries=["FJ", "RU"]),             # both across the antimeridian
    # the other shapes, ~1.6 s each, run with the slow tests (make test-all, CI)
    pytest.param(make_filter(countries=["NO"]), marks=pytest.mark.slow),  # Svalbard, Jan Mayen and the far north
    pytest.param(make_filter(bboxes=[[-10, 35, 3, 44], [170, -50, 180, -30]]), marks=pytest.mark.slow),
    pytest.param(make_filter(cells=["821fa7fffffffff", "8001fffffffffff"]), marks=pytest.mark.slow),
    pytest.param(make_filter(countries=["FR"], bboxes=[[2, 47, 8, 50]]), marks=pytest.mark.slow),
])
def test_pruned_shards_hold_every_region_cell(region):
    """The shards a regional build visits are a superset of those holding a region cell, checked
    against every cell on Earth at res 4 with shards at res 2 (finer shards than a res-4 build uses:
    a harder test of the bound)."""
    cells, lat, lng = all_cells(4)
    country = reverse_geocode(lat, lng, snap_km=cell_radius_km(4)).country
    inside = cells_inside(region, cells, lat, lng, country)
    assert inside.sum() > 0
    roots = sorted(int(c) for c in np.unique(cell_to_parent(cells, 2)))
    kept = set(shard_roots_in(region, roots, 4))
    needed = set(np.unique(cell_to_parent(cells[inside], 2)).tolist())
    assert needed <= kept
    assert len(kept) < len(roots) / 4  # and it prunes


def build(tmp_path, name, *args):
    out = tmp_path / name
    assert build_main(["--resolution", "2", "--out", str(out), "--no-progress", "-q", *args]) == 0
    return out


@pytest.mark.parametrize("args,values", [
    (["--country", "FR", "--country", "es"], {"countries": ["FR", "ES"]}),
    (["--bbox=-10,35,3,44", "--bbox", "100,-10,120,10"], {"bboxes": [[-10, 35, 3, 44], [100, -10, 120, 10]]}),
    (["--cells", "8001fffffffffff", "--cells", "all"], {"cells": ["8001fffffffffff"]}),
    (["--country", "BR", "--bbox=-60,-20,-40,0"], {"countries": ["BR"], "bboxes": [[-60, -20, -40, 0]]}),
])
def test_regional_build_holds_exactly_what_the_filter_keeps(tmp_path, built_r2, args, values):
    out = build(tmp_path, "regional", *args)
    manifest = json.loads((out / "manifest.json").read_text())
    region = manifest["gallery"]["region"]
    assert {k: v for k, v in region.items() if v} == values
    geo, world = Geolocator(out), Geolocator(built_r2)
    if "all" in args:  # sea cells too: compare with the filter over every cell below
        expected = np.sort(h3n.cell_to_children(h3.str_to_int("8001fffffffffff"), 2).astype(np.int64))
    else:
        expected = world.region_ids(make_filter(values.get("countries"), values.get("bboxes"), values.get("cells")))
    assert np.array_equal(np.sort(geo.table.cell), expected)
    assert manifest["gallery"]["count"] == len(expected)


def test_queries_say_when_a_location_is_outside(fr_r2, capsys):
    out = fr_r2
    geo = Geolocator(out)
    assert geo.summary()["region"]["countries"] == ["FR"] and geo.summary()["countries"] == ["FR"]
    assert geo.covers([48.8584, -33.8568, 43.7384], [2.2945, 151.2153, 7.4246]).tolist() == [True, False, False]  # Monaco is MC
    assert geo.outside_note(48.8584, 2.2945) is None
    assert "outside this index's region (countries FR)" in geo.outside_note(-33.8568, 151.2153)
    with pytest.raises(Exception, match="built for countries FR only"):
        geo.locate(np.eye(512, dtype=np.float32)[:1], QueryOptions(k=1, region=make_filter(bboxes=[[100, -40, 150, -10]])))
    assert inspect_main([str(out), "--lookup=-33.8568,151.2153", "--lookup=48.8584,2.2945", "-k", "2"]) == 0
    text = capsys.readouterr().out
    assert "region: countries FR" in text and text.count("note:") == 1 and "km away" in text


def test_the_api_says_which_coordinates_are_inside(fr_r2):
    from fastapi.testclient import TestClient

    from geoindex.serve.app import create_app
    from geoindex.serve.settings import ServeSettings

    out = fr_r2
    with TestClient(create_app(ServeSettings(index=str(out), embeddings_only=True))) as client:
        r = client.post("/v1/embed/locations", json={"coordinates": [[48.8584, 2.2945], [-33.8568, 151.2153]]})
        assert r.status_code == 200 and r.json()["inside_region"] == [True, False]
        assert client.get("/v1/index").json()["region"]["countries"] == ["FR"]


def test_points_follow_the_cells_rule():
    region = make_filter(countries=["NZ"], bboxes=[[160, -50, 180, -30]], cells=["82bb27fffffffff"])
    cell = h3.cell_to_latlng("82bb27fffffffff")
    assert points_inside(region, [cell[0], -41.29, 0.0], [cell[1], 174.78, 0.0]).tolist()[1:] == [False, False]
    assert points_inside(make_filter(countries=["NZ"]), -41.29, 174.78).tolist() == [True]  # Wellington
    assert points_inside(make_filter(countries=["NZ"]), -45.0, -170.0).tolist() == [False]  # open sea, far from any coast


@pytest.mark.parametrize("args,match", [
    (["--cells", "831fb4fffffffff"], "finer than the gallery's 2"),
    (["--country", "XX"], "'XX' has no land in the admin-0 boundaries"),
    (["--country", "France"], "not an ISO 3166-1 alpha-2 code"),
    (["--bbox", "10,50,5,40"], "inverted"),
    (["--cells", "land", "--cells", "all"], "contradict"),
    (["--country", "FR", "--search", "nprobe=4"], "give --factory too"),
    (["--bbox=-30,-60,-20,-55"], "the gallery is empty"),
])
def test_bad_regions_are_refused_with_the_fix(tmp_path, capsys, args, match):
    out = tmp_path / "o"
    assert build_main(["--resolution", "2", "--out", str(out), "--no-progress", "-q", *args]) == 2
    assert match in capsys.readouterr().err and not out.exists()


def test_a_csv_gallery_refuses_a_region(tmp_path, capsys):
    csv = tmp_path / "g.csv"
    csv.write_text("lat,lng\n1,2\n")
    assert build_main(["--gallery-csv", str(csv), "--country", "FR", "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "a CSV gallery holds its own rows" in capsys.readouterr().err


def test_regional_auto_follows_the_cell_count():
    assert regional_choice(7, FLAT_MAX - 1)[0] == "Flat"
    assert regional_choice(7, 108_000)[0] == "IVF,SQ8"                # a country at res 7: like global res 4
    factory, search = regional_choice(7, 1_900_000)                  # a large one: res 5's codec, lists as deep
    assert factory == "IVFH3r4,PQ32" and search.rerank_depth == 256
