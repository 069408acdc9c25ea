"""PNG maps: the basemap decoded from world-atlas TopoJSON, predictions drawn, geolocate --map."""

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image

from geoindex.locate.options import LocateResult, Prediction
from geoindex.maps.basemap import countries, ring_of
from geoindex.maps.draw import _extent, draw_errors, draw_result
from geoindex.cli.locate import main as geolocate


def test_ring_of_follows_topojson_arc_order():
    arcs = [np.array([[0.0, 0.0], [1, 0], [1, 1]]), np.array([[0.0, 0.0], [0, 1], [1, 1]])]
    ring = ring_of(arcs, [0, ~1])  # arc 0, then arc 1 reversed; the shared point appears once
    assert ring.tolist() == [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]


def by_name(name):
    return next(c for c in countries() if c.name == name)


def test_basemap_has_the_countries_where_they_are():
    assert len(countries()) > 200
    france = by_name("France")
    assert any(MplPath(r).contains_point((2.2945, 48.8584)) for r in france.rings)  # Paris
    assert not any(MplPath(r).contains_point((-0.1276, 51.5072)) for r in france.rings)  # London
    russia = by_name("Russia")
    assert all(np.abs(np.diff(r[:, 0])).max() < 180 for r in russia.rings)  # no ring jumps across the map
    assert max(r[:, 0].max() for r in russia.rings) > 180  # Chukotka runs on past the antimeridian


def result(cells_latlng, probs, region=None):
    import h3

    preds = [Prediction(h3.str_to_int(h3.latlng_to_cell(lat, lng, 3)), lat, lng, p, "FJ", None, "Suva", 0.5)
             for (lat, lng), p in zip(cells_latlng, probs)]
    return LocateResult(preds, region)


def colours(path):
    image = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    return {tuple(c) for c in np.unique(image, axis=0)}


def test_draw_result_marks_the_truth_and_stays_on_one_side_of_the_antimeridian(tmp_path):
    # Fiji straddles 180: cells on both sides must make one small map, not a world-wide one
    r = result([(-17.8, 178.4), (-16.6, 179.9), (-16.8, -179.9)], [0.6, 0.3, 0.1])
    out = draw_result(r, tmp_path / "fiji.png", true_latlng=(-18.14, 178.44), title="Fiji")
    assert out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["fiji.png"]  # no temporary left
    assert Image.open(out).size[0] > 1000
    assert (0x1A, 0x98, 0x50) in colours(out)  # the true location's star
    w, e, s, n = _extent([(p.lng, p.lat) for p in r.predictions], [])
    assert w < 180 < e and e - w < 20


def test_draw_errors(tmp_path):
    truth = np.array([[48.85, 2.35], [-33.86, 151.21], [64.8, -147.7]])
    pred = np.array([[48.0, 2.0], [-37.8, 144.9], [65.0, 170.0]])  # the last one across the antimeridian
    out = draw_errors(truth, pred, tmp_path / "errors.png")
    assert out.exists() and Image.open(out).size[0] > 1000


def test_geolocate_writes_one_map_per_query(tmp_path, built_r2, capsys):
    from geoindex.encoders.location import encode_latlng, load_location_encoder

    xq = encode_latlng(load_location_encoder(), np.array([[48.8584, 2.2945], [-33.8568, 151.2153]]))
    np.save(tmp_path / "q.npy", xq)
    argv = ["--embedding", str(tmp_path / "q.npy"), "--index", str(built_r2), "--confidence", "0.9",
            "--map", str(tmp_path / "m.png"), "--true=48.8584,2.2945", "--true=-33.8568,151.2153"]
    assert geolocate(argv) == 0
    err = capsys.readouterr().err
    assert (tmp_path / "m-1.png").exists() and (tmp_path / "m-2.png").exists()
    assert err.count("km from the true location") == 2 and "m-2.png" in err


@pytest.mark.parametrize("extra,match", [
    (["--map", "out.jpg"], "give a .png path"),
    (["--map", "nowhere/out.png"], "give a .png path"),
    (["--true=1,2", "--true=3,4"], "given 2 times for 1 queries"),
])
def test_geolocate_map_arguments(tmp_path, built_r2, capsys, monkeypatch, extra, match):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "q.npy", np.eye(512, dtype=np.float32)[:1])
    assert geolocate(["--embedding", "q.npy", "--index", str(built_r2), *extra]) == 2
    assert match in capsys.readouterr().err


def test_a_map_never_replaces_a_file_geoindex_did_not_draw(tmp_path, built_r2, capsys):
    """Issue 38 item 2, for --map: a user's PNG at the path was replaced silently."""
    np.save(tmp_path / "q.npy", np.eye(512, dtype=np.float32)[:1])
    Image.new("RGB", (8, 8), "red").save(tmp_path / "mine.png")
    before = (tmp_path / "mine.png").read_bytes()
    argv = ["--embedding", str(tmp_path / "q.npy"), "--index", str(built_r2), "--map", str(tmp_path / "mine.png")]
    assert geolocate(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a map geoindex drew" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert (tmp_path / "mine.png").read_bytes() == before
    assert geolocate([*argv, "--overwrite"]) == 0 and (tmp_path / "mine.png").read_bytes() != before
    assert geolocate(argv) == 0  # its own map now: redrawn without --overwrite
