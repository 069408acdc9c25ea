"""radius_km: the great-circle radius around the top answer that holds the asked share of the mass
(issue 34, item 3), on synthetic posteriors whose radius is known, and in every output."""

import json

import h3
import numpy as np
import pytest

from geoindex.cells.countries import cell_radius_km
from geoindex.cells.geocode import haversine_km
from geoindex.cli.locate import main as geolocate
from geoindex.encoders.location import encode_latlng
from geoindex.locate.options import QueryOptions
from geoindex.locate.radius import mass_radius_km
from geoindex.locate.ranking import rank
from geoindex.store.cell_table import CellTable


def destination(lat, lng, km, bearing_deg):
    """The point ``km`` from (lat, lng) along ``bearing_deg`` (spherical)."""
    d, b = km / 6371.0088, np.radians(bearing_deg)
    p1, l1 = np.radians(lat), np.radians(lng)
    p2 = np.arcsin(np.sin(p1) * np.cos(d) + np.cos(p1) * np.sin(d) * np.cos(b))
    l2 = l1 + np.arctan2(np.sin(b) * np.sin(d) * np.cos(p1), np.cos(d) - np.sin(p1) * np.sin(p2))
    return np.degrees(p2), (np.degrees(l2) + 540) % 360 - 180


@pytest.mark.parametrize("confidence,expected", [(0.5, 0.0), (0.9, 100.0), (0.95, 300.0), (1.0, 300.0)])
def test_mass_radius_of_rings(confidence, expected):
    """Half the mass at the top point, 0.4 on a ring at 100 km, 0.1 on a ring at 300 km (across the
    antimeridian: the top point is at 179.5 E)."""
    top = (-17.0, 179.5)
    ring1 = [destination(*top, 100, b) for b in range(0, 360, 45)]
    ring3 = [destination(*top, 300, b) for b in range(10, 360, 72)]
    points = np.array([top, *ring1, *ring3])
    prob = np.r_[0.5, np.full(8, 0.05), np.full(5, 0.02)]
    assert mass_radius_km(*top, points, prob, confidence) == pytest.approx(expected, abs=1e-6)
    assert mass_radius_km(*top, points, prob, confidence, floor_km=150.0) == pytest.approx(max(expected, 150.0))


def test_rank_reports_the_radius_of_a_known_softmax():
    """Cells scored so that the softmax puts 0.6 on one cell, 0.05 on each of its six neighbours and
    0.1 on the ring two steps out: 90% lies within the farthest neighbour's distance."""
    res = 4
    centre = h3.latlng_to_cell(45.0, 6.0, res)
    ring1 = sorted(h3.grid_ring(centre, 1))
    ring2 = sorted(h3.grid_ring(centre, 2))
    cells = [centre, *ring1, *ring2]
    prob = np.r_[0.6, np.full(6, 0.05), np.full(len(ring2), 0.1 / len(ring2))]
    scale = 40.0
    scores = (np.log(prob) / scale).astype(np.float32)
    ids = np.array([h3.str_to_int(c) for c in cells], dtype=np.int64)
    latlng = np.array([h3.cell_to_latlng(c) for c in cells])
    order = np.argsort(ids)
    table = CellTable(ids[order], latlng[order, 0], latlng[order, 1],
                      {c: np.zeros(len(ids), np.int32) for c in ("country", "admin1", "place")},
                      {c: np.array([None], dtype=object) for c in ("country", "admin1", "place")})
    best = np.argsort(-scores, kind="stable")
    result = rank(scores[best], ids[best], QueryOptions(k=3), table, scale, res)
    expected = haversine_km(*latlng[0], latlng[1:7, 0], latlng[1:7, 1]).max()
    assert result.radius_confidence == 0.9
    assert result.radius_km == pytest.approx(expected, abs=1e-2)
    assert result.predictions[0].probability == pytest.approx(0.6)
    wide = rank(scores[best], ids[best], QueryOptions(k=3, confidence=1.0), table, scale, res)
    assert wide.radius_km == pytest.approx(haversine_km(*latlng[0], latlng[7:, 0], latlng[7:, 1]).max(), abs=1e-2)
    narrow = rank(scores[best], ids[best], QueryOptions(k=3, confidence=0.5), table, scale, res)
    assert narrow.radius_km == pytest.approx(cell_radius_km(res), abs=1e-3)  # one cell holds it: the cell's own radius


def test_every_output_carries_radius_and_place_km(flat_r2, encoder, tmp_path, capsys):
    np.save(tmp_path / "q.npy", encode_latlng(encoder, np.array([[48.8584, 2.2945]])))
    argv = ["--index", str(flat_r2), "--embedding", str(tmp_path / "q.npy"), "-k", "3"]
    assert geolocate([*argv, "--format", "json"]) == 0
    [out] = json.loads(capsys.readouterr().out)
    assert out["radius_km"] > 0 and out["radius_confidence"] == 0.9
    assert all(p["place_km"] is None or p["place_km"] >= 0 for p in out["predictions"])
    assert any(p["place"] and p["place_km"] > 0 for p in out["predictions"])
    assert geolocate([*argv, "--format", "geojson", "--confidence", "0.5"]) == 0
    points = [f for f in json.loads(capsys.readouterr().out)["features"] if f["geometry"]["type"] == "Point"]
    assert all(f["properties"]["radius_confidence"] == 0.5 and "place_km" in f["properties"] for f in points)
    assert points[0]["properties"]["radius_km"] <= out["radius_km"]
    assert geolocate(argv) == 0
    table = capsys.readouterr().out
    assert "90% of the mass within" in table and " km)" in table


def test_the_api_carries_radius_and_place_km(flat_r2, encoder):
    from fastapi.testclient import TestClient

    from geoindex.serve.app import create_app
    from geoindex.serve.settings import ServeSettings

    xq = encode_latlng(encoder, np.array([[48.8584, 2.2945], [-33.8568, 151.2153]]))
    with TestClient(create_app(ServeSettings(index=str(flat_r2), embeddings_only=True))) as client:
        r = client.post("/v1/locate/embedding", json={"embeddings": xq.tolist(), "top_k": 3})
        assert r.status_code == 200
        for res in r.json()["results"]:
            assert res["radius_km"] > 0 and res["radius_confidence"] == 0.9
            assert all("place_km" in p for p in res["predictions"])
