"""The query layer: Geolocator (probabilities, aggregation, confidence regions, region filters)
against brute force on real location embeddings, and the geolocate CLI."""

import json
import math
import shutil

import duckdb
import faiss
import h3
import numpy as np
import pytest

from geoindex.errors import IndexDirError, InvalidQueryError
from geoindex import Geolocator, QueryOptions
from geoindex.locate.options import validate_embeddings
from geoindex.encoders.location import encode_latlng
from geoindex.locate.regions import make_filter
from geoindex.cli.locate import main as geolocate


@pytest.fixture(scope="module")
def gallery(flat_r2, encoder):
    """(ids, lat, lng, exact vectors, country) of the res-2 land gallery."""
    con = duckdb.connect(str(flat_r2 / "cells.duckdb"), read_only=True)
    c = con.execute("SELECT cell, lat, lng, country FROM cells ORDER BY cell").fetchnumpy()
    lat, lng = np.asarray(c["lat"]), np.asarray(c["lng"])
    return c["cell"], lat, lng, encode_latlng(encoder, np.column_stack((lat, lng))), np.asarray(c["country"])


def test_top1_is_the_cell_itself_and_probabilities_are_a_softmax(flat_r2, gallery):
    ids, lat, lng, xb, _ = gallery
    geo = Geolocator(flat_r2)
    res = geo.locate(xb[:50], QueryOptions(k=5, candidates=40))
    assert [r.predictions[0].cell for r in res] == ids[:50].tolist()
    scale = math.exp(geo.dir.manifest["encoder"]["logit_scale"])
    for q, r in enumerate(res):
        probs = [p.probability for p in r.predictions]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
        exact = np.sort(xb @ xb[q])[::-1][:40]
        softmax = np.exp(scale * (exact - exact[0]))
        softmax /= softmax.sum()
        assert np.allclose(probs, softmax[:5], atol=1e-5)
        p = r.predictions[0]
        row = int(np.searchsorted(ids, p.cell))
        assert (p.lat, p.lng) == (lat[row], lng[row]) and abs(p.score - 1.0) < 1e-5


def test_all_candidates_sum_to_one(flat_r2, gallery):
    xb = gallery[3]
    res = Geolocator(flat_r2).locate(xb[:3], QueryOptions(k=30, candidates=30))
    for r in res:
        assert abs(sum(p.probability for p in r.predictions) - 1) < 1e-9


def test_aggregation_sums_children_into_parents(flat_r2, gallery):
    xb = gallery[3]
    geo = Geolocator(flat_r2)
    fine = geo.locate(xb[100:101], QueryOptions(k=200, candidates=200))[0].predictions
    coarse = geo.locate(xb[100:101], QueryOptions(k=10, candidates=200, aggregate_res=0))[0].predictions
    mass = {}
    for p in fine:
        parent = h3.str_to_int(h3.cell_to_parent(h3.int_to_str(p.cell), 0))
        mass[parent] = mass.get(parent, 0) + p.probability
    assert [p.cell for p in coarse] == sorted(mass, key=mass.get, reverse=True)[:10]
    for p in coarse:
        assert h3.get_resolution(h3.int_to_str(p.cell)) == 0
        assert abs(p.probability - mass[p.cell]) < 1e-9
    assert coarse[0].probability >= fine[0].probability


def test_confidence_region_is_minimal_valid_geojson(flat_r2, gallery):
    xb = gallery[3]
    res = Geolocator(flat_r2).locate(xb[7:8], QueryOptions(k=3, candidates=100, confidence=0.8))[0]
    region = res.confidence_region
    assert region["type"] == "Feature" and region["geometry"]["type"] in ("Polygon", "MultiPolygon")
    polys = region["geometry"]["coordinates"]
    polys = [polys] if region["geometry"]["type"] == "Polygon" else polys
    for poly in polys:
        for ring in poly:
            assert ring[0] == ring[-1] and len(ring) >= 4
            assert all(-180 <= x <= 180 and -90 <= y <= 90 for x, y in ring)
    cells = region["properties"]["cells"]
    full = Geolocator(flat_r2).locate(xb[7:8], QueryOptions(k=100, candidates=100))[0].predictions
    mass = [p.probability for p in full]
    assert [h3.int_to_str(p.cell) for p in full[: len(cells)]] == cells
    assert sum(mass[: len(cells)]) >= 0.8 > sum(mass[: len(cells) - 1])
    json.dumps(region)  # serialisable


@pytest.mark.parametrize("kind", ["country", "bbox", "cells_res0", "cells_res1", "country_and_bbox"])
def test_region_filter_is_true_topk_inside_region(flat_r2, built_r2, gallery, encoder, kind):
    ids, lat, lng, xb, country = gallery
    filters = {
        "country": dict(countries=["br", "AR"]),
        "bbox": dict(bboxes=["-10,35,30,60"]),
        "cells_res0": dict(cells=[h3.cell_to_parent(h3.int_to_str(int(ids[500])), 0)]),
        "cells_res1": dict(cells=[h3.cell_to_parent(h3.int_to_str(int(ids[900])), 1),
                                  h3.cell_to_parent(h3.int_to_str(int(ids[1500])), 0)]),
        "country_and_bbox": dict(countries=["US"], bboxes=["-125,30,-100,50"]),
    }[kind]
    region = make_filter(**filters)
    if kind.startswith("country") and "bboxes" not in filters:
        inside = np.isin(country, ["BR", "AR"])
    elif kind == "bbox":
        inside = (lat >= 35) & (lat <= 60) & (lng >= -10) & (lng <= 30)
    elif kind == "country_and_bbox":
        inside = (country == "US") & (lat >= 30) & (lat <= 50) & (lng >= -125) & (lng <= -100)
    else:
        targets = [h3.str_to_int(c) for c in filters["cells"]]
        inside = np.array([any(h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), h3.get_resolution(h3.int_to_str(t)))) == t
                               for t in targets) for c in ids])
    assert 5 < inside.sum() < len(ids) / 2
    xq = encode_latlng(encoder, np.array([[48.85, 2.35], [-23.5, -46.6], [40.7, -74.0], [35.7, 139.7]]))
    k = 5
    exact = xq @ xb[inside].T
    truth = ids[inside][np.argsort(-exact, axis=1)[:, :k]]

    flat = Geolocator(flat_r2).locate(xq, QueryOptions(k=k, region=region))
    assert [[p.cell for p in r.predictions] for r in flat] == truth.tolist()

    ivf = Geolocator(built_r2)  # IVFH3 + SQ8: every list holding region cells is scanned
    got = ivf.locate(xq, QueryOptions(k=k, region=region))
    region_set = set(ids[inside].tolist())
    assert all(p.cell in region_set for r in got for p in r.predictions)
    # identical to an exhaustive scan of the same codes restricted to the region
    sel = faiss.IDSelectorBatch(ids[inside])
    params = faiss.SearchParametersIVF()
    params.sel, params.nprobe = sel, ivf.index.nlist
    _, I = ivf.index.search(xq, k, params=params)
    assert [[p.cell for p in r.predictions] for r in got] == I.tolist()
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(I.tolist(), truth.tolist())])
    assert recall >= 0.8


def test_search_override_and_thread_safety(built_r2, gallery):
    xb = gallery[3]
    geo = Geolocator(built_r2)
    default = geo.index.nprobe
    wide = geo.locate(xb[:20], QueryOptions(k=3, search="nprobe=1000"))
    assert geo.index.nprobe == default  # the shared index is untouched
    assert np.mean([r.predictions[0].cell == c for r, c in zip(wide, gallery[0][:20])]) >= 0.95
    with pytest.raises(InvalidQueryError.__mro__[1], match="nprobe"):
        geo.locate(xb[:1], QueryOptions(search="efSearch=3"))


@pytest.mark.parametrize("bad,match", [
    (np.zeros((1, 511)), "shape"), (np.zeros((0, 512)), "shape"), (np.full((1, 512), np.nan), "NaN"),
    (np.full((1, 512), np.inf), "NaN or infinity"), (np.zeros((2, 512)), "all zeros"), ([["a"] * 512], "numbers"),
])
def test_bad_embeddings(bad, match):
    with pytest.raises(InvalidQueryError, match=match):
        validate_embeddings(bad)


@pytest.mark.parametrize("options,match", [
    (dict(k=0), "k = 0"), (dict(k=10**9), "1..2203"), (dict(k=2.5), "integer"),
    (dict(candidates=0), "candidates"), (dict(aggregate_res=3), "0..2"), (dict(confidence=1.5), r"\(0, 1\]"),
])
def test_bad_options(flat_r2, options, match):
    geo = Geolocator(flat_r2)
    with pytest.raises(InvalidQueryError, match=match):
        geo.locate(np.ones((1, 512)), QueryOptions(**options))


@pytest.mark.parametrize("filters,match", [
    (dict(countries=["ZZ"]), "no cells in this index"), (dict(countries=["FRA"]), "alpha-2"),
    (dict(bboxes=["10,50,20,40"]), "inverted"), (dict(bboxes=["20,40,10,50"]), "antimeridian"),
    (dict(bboxes=["1,2,3"]), "four numbers"), (dict(bboxes=["0,0,200,10"]), "outside"),
    (dict(cells=["nothex"]), "not an H3 cell"), (dict(cells=["851fb467fffffff"]), "finer than"),
    (dict(countries=["FR"], bboxes=["100,-10,110,0"]), "matches no cells"),
])
def test_bad_filters(flat_r2, filters, match):
    geo = Geolocator(flat_r2)
    with pytest.raises(InvalidQueryError, match=match):
        geo.locate(np.ones((1, 512)), QueryOptions(region=make_filter(**filters)))


def test_index_dir_errors(tmp_path, flat_r2):
    with pytest.raises(IndexDirError, match="geoindex build"):
        Geolocator(tmp_path / "missing")
    other = tmp_path / "other"
    shutil.copytree(flat_r2, other)
    m = json.loads((other / "manifest.json").read_text())
    m["encoder"]["weights_sha256"] = "f" * 64
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexDirError, match="another model"):
        Geolocator(other)


def test_cli_json_for_embeddings_images_and_text(flat_r2, gallery, tmp_path, capsys):
    from PIL import Image

    np.save(tmp_path / "q.npy", gallery[3][:2])
    Image.new("RGB", (320, 240), (20, 90, 200)).save(tmp_path / "sea.jpg")
    argv = ["--index", str(flat_r2), "--embedding", str(tmp_path / "q.npy"), str(tmp_path / "sea.jpg"),
            "--text", "a beach with palm trees", "--clip-model", "tiny-test", "-k", "3", "--format", "json"]
    assert geolocate(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["query"] for o in out] == [str(tmp_path / "sea.jpg"), "a beach with palm trees",
                                         f"{tmp_path / 'q.npy'}[0]", f"{tmp_path / 'q.npy'}[1]"]
    for o in out:
        preds = o["predictions"]
        assert len(preds) == 3
        assert {"cell", "lat", "lng", "probability", "country", "admin1", "place", "score"} <= set(preds[0])
        assert [p["probability"] for p in preds] == sorted((p["probability"] for p in preds), reverse=True)
    assert out[2]["predictions"][0]["cell"] == int(gallery[0][0])


def test_cli_geojson_and_table(flat_r2, gallery, tmp_path, capsys):
    np.save(tmp_path / "q.npy", gallery[3][:1])
    assert geolocate(["--index", str(flat_r2), "--embedding", str(tmp_path / "q.npy"), "--format", "geojson",
                      "--confidence", "0.5", "--country", "FR", "--country", "DE"]) == 0
    fc = json.loads(capsys.readouterr().out)
    assert fc["type"] == "FeatureCollection"
    kinds = [f["geometry"]["type"] for f in fc["features"]]
    assert kinds.count("Point") == 5 and kinds[-1] in ("Polygon", "MultiPolygon")
    assert all(f["properties"]["country"] in ("FR", "DE") for f in fc["features"] if f["geometry"]["type"] == "Point")
    assert geolocate(["--index", str(flat_r2), "--embedding", str(tmp_path / "q.npy")]) == 0
    assert "p=" in capsys.readouterr().out


@pytest.mark.parametrize("argv,match", [
    (["--top-k", "0"], "k = 0"), (["--country", "XX"], "no cells"), (["--bbox=5,5,1,1"], "inverted"),
    ([], "nothing to geolocate"), (["--text", ""], "empty"),
])
def test_cli_errors(flat_r2, tmp_path, capsys, argv, match):
    extra = [] if argv and argv[0] == "--text" else ["--embedding", str(tmp_path / "q.npy")] if argv else []
    np.save(tmp_path / "q.npy", np.ones((1, 512), np.float32))
    assert geolocate(["--index", str(flat_r2), "--clip-model", "tiny-test", *extra, *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
