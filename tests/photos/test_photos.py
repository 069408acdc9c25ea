"""Reference photos: the gallery build, neighbours, fusion with the cell posterior, refusals.

The photos are synthetic (:mod:`geoindex.train.synthetic`: their colour says where they were taken)
seen through the tiny random CLIP: similar places give similar embeddings, which is all the
neighbour search and the fusion need; the cell gallery's answers through the released head are
meaningless on them, so the photos must do better than the cells alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from geoindex.cells.geocode import haversine_km
from geoindex.errors import IndexDirError, InvalidArgumentError, TrainingDataError
from geoindex.locate.options import LocateResult, Prediction, QueryOptions
from geoindex.locate.regions import make_filter
from geoindex.photos.evidence import open_photos
from geoindex.photos.fusion import FusionSettings, Neighbour, fuse
from geoindex.train.synthetic import write_grid, write_photos
from tests.helpers import REPO



# -- the fusion rule alone (fast) -------------------------------------------------------------------
def _pred(lat, lng, p, cell=1):
    return Prediction(cell=cell, lat=lat, lng=lng, probability=p, country=None, admin1=None, place=None, score=0.2)


def _nb(i, lat, lng, s):
    return Neighbour(i, f"{i}.png", lat, lng, s, 0.0, {})


CELLS = LocateResult([_pred(10, 10, 0.5, 1), _pred(40, 40, 0.3, 2), _pred(-20, 100, 0.2, 3)])


def test_weight_zero_is_the_cell_answer():
    out = fuse(CELLS, [_nb(0, 60.0, 5.0, 1.0)] + [_nb(i, -20.01, 100.01, 0.9) for i in (1, 2)], FusionSettings(weight=0), 5)
    assert [p.cell for p in out.predictions] == [1, 2, 3]  # not even an exact copy's place
    assert [p.probability for p in out.predictions] == pytest.approx([0.5, 0.3, 0.2])


def test_agreeing_neighbours_lift_their_place():
    """Three close, similar photos next to the third cell: it (or their place) wins."""
    nbs = [_nb(0, -20.05, 100.0, 0.9), _nb(1, -20.0, 100.05, 0.9), _nb(2, -19.98, 99.97, 0.88)]
    out = fuse(CELLS, nbs, FusionSettings(weight=0.5), 3)
    assert haversine_km(out.predictions[0].lat, out.predictions[0].lng, -20, 100) < 20
    assert all(n.km_from_top < 20 for n in out.neighbours)


def test_conservative_default_keeps_a_confident_cell():
    """One weakly similar photo far away does not overrule a confident cell posterior."""
    cells = LocateResult([_pred(10, 10, 0.9, 1), _pred(40, 40, 0.1, 2)])
    out = fuse(cells, [_nb(0, -50, -50, 0.6)], FusionSettings(), 2)
    assert out.predictions[0].cell == 1


def test_an_exact_copy_puts_the_top1_at_its_place():
    nbs = [_nb(7, 60.0, 5.0, 0.9995), _nb(1, -20.0, 100.0, 0.99), _nb(2, -20.0, 100.01, 0.99)]
    out = fuse(CELLS, nbs, FusionSettings(), 3)
    top = out.predictions[0]
    assert (top.lat, top.lng) == (60.0, 5.0) and top.score == pytest.approx(0.9995)
    assert top.probability >= max(p.probability for p in out.predictions[1:])
    assert out.neighbours[0].km_from_top == 0


def test_the_radius_and_the_labels_follow_the_fused_answer():
    """When the photos move the top-1, radius_km is measured around the new top over the fused mass
    (the cells' radius was around another point), and a photo place is labelled from its own point."""
    from geoindex.cells.geocode import reverse_geocode
    from geoindex.locate.radius import mass_radius_km

    cells = replace(CELLS, radius_km=4000.0, radius_confidence=0.9)
    nbs = [_nb(7, 48.8584, 2.2945, 0.9995), _nb(1, 48.86, 2.30, 0.99), _nb(2, 48.85, 2.29, 0.99)]
    out = fuse(cells, nbs, FusionSettings(), 3, floor_km=1.0)
    top = out.predictions[0]
    assert (top.lat, top.lng) == (48.8584, 2.2945)
    # the radius is the distance from the new top to one of the fused candidates (cells, photo places)
    cand = [(p.lat, p.lng) for p in CELLS.predictions] + [(n.lat, n.lng) for n in nbs]
    assert min(abs(out.radius_km - haversine_km(top.lat, top.lng, a, b)) for a, b in cand) < 1e-3
    probs = np.array([p.probability for p in out.predictions])
    pts = np.array([[p.lat, p.lng] for p in out.predictions])
    assert out.radius_km >= mass_radius_km(top.lat, top.lng, pts, probs, 0.9, 1.0) - 1e-3  # fused pool >= shown k
    own = reverse_geocode(np.array([top.lat]), np.array([top.lng]))
    assert (top.country, top.place) == ("FR", own.place[0]) and top.place_km is not None
    assert fuse(cells, nbs, FusionSettings(weight=0), 3).radius_km == cells.radius_km  # cells alone: unchanged


def test_dissimilar_neighbours_do_not_vote():
    out = fuse(CELLS, [_nb(0, -50, -50, 0.2)], FusionSettings(weight=1.0), 3)
    assert [p.cell for p in out.predictions] == [1, 2, 3]


@pytest.mark.parametrize("kw", [{"weight": 1.5}, {"k": 0}, {"bandwidth_km": 0}, {"min_similarity": 1.0}])
def test_bad_fusion_settings_are_refused(kw):
    with pytest.raises(ValueError):
        FusionSettings(**kw)


# -- built galleries (slow: CLIP encoding, GeoNames) --------------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """200 reference photos with a metadata column, 30 held-out query photos, a 10-degree cell gallery."""
    root = tmp_path_factory.mktemp("photos")
    csv = write_photos(root / "ref", 200, seed=0)
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0] + ",source"] + [f"{ln},cam{i % 3}" for i, ln in enumerate(lines[1:])]) + "\n")
    queries = write_photos(root / "queries", 30, seed=1)
    grid = write_grid(root / "grid.csv")
    from geoindex.cli.build import main as build

    assert build(["--gallery-csv", str(grid), "--out", str(root / "cells"), "--no-progress", "-q"]) == 0
    assert build(["--photos", str(csv), "--clip-model", "tiny-test", "--out", str(root / "ref-index"),
                  "--no-progress", "-q"]) == 0
    return {"root": root, "csv": csv, "queries": queries, "cells": root / "cells", "ref": root / "ref-index"}


def _encode(paths):
    from geoindex.encoders.clip import load_image_encoder
    from geoindex.encoders.images import load_image

    return load_image_encoder("tiny-test", device="cpu").encode_images([load_image(p) for p in paths])


def _rows(csv):
    lines = csv.read_text().splitlines()[1:]
    return [(csv.parent / ln.split(",")[0], float(ln.split(",")[1]), float(ln.split(",")[2])) for ln in lines]


@pytest.mark.slow
def test_build_records_encoder_files_and_metadata(synth):
    import duckdb

    m = json.loads((synth["ref"] / "manifest.json").read_text())
    assert m["format"] == "geoindex-photos/1" and m["photos"] == 200 and m["skipped"] == 0
    assert m["encoder"]["clip_model"] == "tiny-test" and len(m["encoder"]["image_head_sha256"]) == 64
    assert m["index"]["factory"] == "Flat" and set(m["files"]) >= {"vectors.faiss", "photos.duckdb", "skipped.csv"}
    assert m["csv"]["metadata_columns"] == ["source"]
    con = duckdb.connect(str(synth["ref"] / "photos.duckdb"), read_only=True)
    assert con.execute("SELECT metadata FROM photos WHERE id = 4").fetchone()[0] == '{"source": "cam1"}'
    assert not list(synth["root"].glob("*.partial")) and not list(synth["root"].glob(".ref-index.tmp*"))


@pytest.mark.slow
def test_exact_copies_are_neighbour_1_with_the_top1_at_their_place(synth):
    from geoindex.locate.geolocator import Geolocator

    rows = _rows(synth["csv"])[:12]
    geo = Geolocator(synth["cells"], evidence=open_photos(synth["ref"]))
    results = geo.locate(_encode([r[0] for r in rows]), QueryOptions(k=3))
    for i, ((path, lat, lng), res) in enumerate(zip(rows, results)):
        first = res.neighbours[0]
        assert first.id == i and first.image == path.name and first.similarity >= 0.999
        assert (res.predictions[0].lat, res.predictions[0].lng) == (lat, lng)
        assert first.km_from_top == 0 and first.metadata == {"source": f"cam{i % 3}"}


@pytest.mark.slow
def test_fusion_beats_the_cells_alone_on_held_out_photos(synth):
    """Held-out photos (other places): the fused top-1 is nearer the truth than the cells' alone."""
    from geoindex.locate.geolocator import Geolocator

    rows = _rows(synth["queries"])
    xq = _encode([r[0] for r in rows])
    truth = np.array([(r[1], r[2]) for r in rows])

    def errors(weight):
        geo = Geolocator(synth["cells"], evidence=open_photos(synth["ref"], fusion=FusionSettings(weight=weight)))
        top = np.array([(r.predictions[0].lat, r.predictions[0].lng) for r in geo.locate(xq, QueryOptions(k=1))])
        return haversine_km(truth[:, 0], truth[:, 1], top[:, 0], top[:, 1])

    cells, fused = errors(0.0), errors(FusionSettings().weight)
    # measured: median ~3,600 km fused vs ~6,200 km for the cells (the tiny CLIP tells colours apart coarsely)
    assert np.median(fused) < 0.75 * np.median(cells), (np.median(fused), np.median(cells))
    assert fused.mean() < cells.mean() and (fused < cells - 1).sum() > (fused > cells + 1).sum()


@pytest.mark.slow
def test_region_filters_apply_to_neighbours(synth):
    from geoindex.locate.geolocator import Geolocator

    geo = Geolocator(synth["cells"], evidence=open_photos(synth["ref"]))
    region = make_filter([], ["-180,0,180,90"], [])  # the northern hemisphere
    res = geo.locate(_encode([_rows(synth["csv"])[0][0]]), QueryOptions(k=3, region=region))[0]
    inside = [n for n in res.neighbours]
    assert len(inside) == 10 and all(n.lat >= 0 for n in inside)
    assert all(p.lat >= 0 for p in res.predictions)


@pytest.mark.slow
def test_another_clip_model_or_weights_is_refused(synth, tmp_path):
    from geoindex.photos.gallery import PhotoGallery

    with pytest.raises(IndexDirError, match="encoded with CLIP tiny-test.*--clip-model tiny-test"):
        PhotoGallery(synth["ref"]).check_encoder("ViT-L-14", None, None)
    other = tmp_path / "other"
    shutil.copytree(synth["ref"], other)
    m = json.loads((other / "manifest.json").read_text())
    m["encoder"]["image_head_sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexDirError, match="other GeoCLIP weights"):
        open_photos(other)
    with pytest.raises(IndexDirError, match="not 'geoindex-photos/1'.*cell index"):
        open_photos(synth["cells"])


@pytest.mark.slow
def test_compressed_index_agrees_with_exact_search(synth, tmp_path):
    """IVF + PQ codes + re-ranking from the exact store against the Flat gallery: recall@10 >= 0.9."""
    from geoindex.photos.build import PhotoBuildConfig, build_photos
    from geoindex.photos.gallery import PhotoGallery
    from geoindex.index.search import SearchSettings

    out = tmp_path / "ivf"
    build_photos(PhotoBuildConfig(csv=synth["csv"], out=out, clip_model="tiny-test", factory="IVF8,PQ16x4",
                                  search=SearchSettings.parse("nprobe=4,rerank=40"), progress=False))
    assert json.loads((out / "manifest.json").read_text())["store"]["kind"] == "fp16"
    xq = _encode([r[0] for r in _rows(synth["queries"])])
    _, exact = PhotoGallery(synth["ref"]).search(xq, 10)
    D, approx = PhotoGallery(out).search(xq, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9 and (np.diff(D, axis=1) <= 1e-6).all()


@pytest.mark.slow
def test_unreadable_photos_are_skipped_and_listed_and_a_failed_build_resumes(synth, tmp_path, monkeypatch):
    """A missing photo is skipped and listed; a build that fails after encoding leaves no REF (atomic)
    and its rerun reuses the encoded shards (the encoder is not called again)."""
    import geoindex.photos.build as photo_build

    csv = tmp_path / "photos.csv"
    lines = synth["csv"].read_text().splitlines()[:21]
    csv.write_text("\n".join([lines[0]] + [f"{synth['csv'].parent}/{ln}" for ln in lines[1:]]
                             + ["missing.png,1.0,2.0,camX"]) + "\n")
    out = tmp_path / "ref"
    from geoindex.photos import stream

    real_fill = stream.fill
    monkeypatch.setattr(stream, "fill", lambda *a: (_ for _ in ()).throw(RuntimeError("disk full")))
    config = photo_build.PhotoBuildConfig(csv=csv, out=out, clip_model="tiny-test", progress=False)
    with pytest.raises(RuntimeError, match="disk full"):
        photo_build.build_photos(config)
    assert not out.exists() and (tmp_path / ".ref.partial").is_dir()
    assert not (tmp_path / ".ref.partial" / "staging").exists()
    monkeypatch.setattr(stream, "fill", real_fill)
    monkeypatch.setattr("geoindex.train.features.cache_features", lambda *a, **k: pytest.fail("encoded again"))
    m = photo_build.build_photos(config)
    assert m["photos"] == 20 and m["skipped"] == 1 and not (tmp_path / ".ref.partial").exists()
    assert "missing.png" in (out / "skipped.csv").read_text()
    with pytest.raises(IndexDirError, match="--overwrite"):  # the check every gallery kind makes
        photo_build.build_photos(config)


@pytest.mark.slow
def test_a_features_cache_is_reused_without_encoding(synth, tmp_path, monkeypatch):
    from geoindex.photos.build import PhotoBuildConfig, build_photos
    from geoindex.photos.gallery import PhotoGallery
    from geoindex.train.features import cache_features

    cache_features(synth["csv"], tmp_path / "feats", clip_model="tiny-test", device="cpu", progress=False)
    xq = _encode([r[0] for r in _rows(synth["csv"])[:5]])
    monkeypatch.setattr("geoindex.encoders.clip.load_clip", lambda *a, **k: pytest.fail("CLIP loaded"))
    with pytest.raises(TrainingDataError, match="holds tiny-test features"):
        build_photos(PhotoBuildConfig(csv=synth["csv"], out=tmp_path / "x", features=tmp_path / "feats",
                                      clip_model="ViT-L-14-random"))
    build_photos(PhotoBuildConfig(csv=synth["csv"], out=tmp_path / "ref", features=tmp_path / "feats",
                                  clip_model="tiny-test"))
    D, I = PhotoGallery(tmp_path / "ref").search(xq, 1)
    assert I[:, 0].tolist() == [0, 1, 2, 3, 4] and (D[:, 0] >= 0.999).all()  # fp16 features: still copies


@pytest.mark.slow
def test_commands_as_a_user_runs_them(synth, tmp_path):
    path, lat, lng = _rows(synth["csv"])[3]
    run = [sys.executable, "-m", "geoindex"]
    loc = subprocess.run([*run, "locate", str(path), "--index", str(synth["cells"]), "--photos", str(synth["ref"]),
                          "--clip-model", "tiny-test", "--format", "json", "--neighbours", "4"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert loc.returncode == 0, loc.stderr
    out = json.loads(loc.stdout)[0]
    assert len(out["neighbours"]) == 4 and out["neighbours"][0]["image"] == path.name
    assert (out["predictions"][0]["lat"], out["predictions"][0]["lng"]) == (lat, lng)
    bad = subprocess.run([*run, "locate", str(path), "--index", str(synth["cells"]), "--photos", str(synth["ref"]),
                          "--clip-model", "ViT-L-14-random"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "encoded with CLIP tiny-test" in bad.stderr
    cell_flag = subprocess.run([*run, "build", "--photos", str(synth["csv"]), "--out", str(tmp_path / "r"),
                                "--precision", "fp16"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert cell_flag.returncode == 2 and "--precision is a cell-index flag" in cell_flag.stderr


# -- the server: neighbours in answers, images only from --photos-root --------------------------------
@pytest.fixture(scope="module")
def traversal_ref(synth, tmp_path_factory):
    """A gallery whose CSV names a photo inside the served folder, one outside it (../) and a symbolic
    link inside it that points outside."""
    from geoindex.photos.build import PhotoBuildConfig, build_photos

    root = tmp_path_factory.mktemp("serve")
    (root / "pub").mkdir()
    (root / "secret").mkdir()
    rows = _rows(synth["csv"])
    shutil.copy(rows[0][0], root / "pub" / "inside.png")
    shutil.copy(rows[1][0], root / "secret" / "outside.png")
    (root / "pub" / "link.png").symlink_to(root / "secret" / "outside.png")
    csv = root / "pub" / "photos.csv"
    csv.write_text(f"image,lat,lng\ninside.png,{rows[0][1]},{rows[0][2]}\n../secret/outside.png,{rows[1][1]},"
                   f"{rows[1][2]}\nlink.png,{rows[2][1]},{rows[2][2]}\n")
    build_photos(PhotoBuildConfig(csv=csv, out=root / "ref", clip_model="tiny-test", progress=False))
    return root


@pytest.mark.slow
def test_server_answers_neighbours_and_serves_images_only_from_the_root(synth, traversal_ref):
    from fastapi.testclient import TestClient

    from geoindex.serve.app import create_app
    from geoindex.serve.settings import ServeSettings

    root = traversal_ref
    settings = ServeSettings(index=str(synth["cells"]), clip_model="tiny-test", photos=str(root / "ref"),
                             photos_root=str(root / "pub"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post("/v1/locate", files={"images": ("q.png", (root / "pub" / "inside.png").read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        res = r.json()["results"][0]
        assert res["neighbours"][0]["image"] == "inside.png" and res["neighbours"][0]["similarity"] >= 0.999
        assert client.get("/v1/photos").json()["photos"] == 3
        ok = client.get(f"/v1/photos/{res['neighbours'][0]['id']}/image")
        assert ok.status_code == 200 and ok.content == (root / "pub" / "inside.png").read_bytes()
        assert ok.headers["content-type"] == "image/png"
        for path in ("/v1/photos/1/image", "/v1/photos/2/image", "/v1/photos/99/image"):  # ../, a link out, no photo
            r = client.get(path)
            assert r.status_code == 404 and b"PNG" not in r.content, path
        for path in ("/v1/photos/-1/image", "/v1/photos/abc/image"):
            assert client.get(path).status_code == 422
        for path in ("/v1/photos/..%2F..%2Fsecret%2Foutside.png/image", "/v1/photos/0/..%2F..%2Fsecret%2Foutside.png",
                     "/v1/photos/0/image/../../secret/outside.png"):
            r = client.get(path)
            assert r.status_code in (404, 422) and b"PNG" not in r.content, path
    without_root = replace_settings(settings, photos_root=None)
    with TestClient(create_app(without_root), raise_server_exceptions=False) as client:
        r = client.get("/v1/photos/0/image")
        assert r.status_code == 404 and "--photos-root" in r.json()["error"]["message"]


def replace_settings(settings, **kw):
    from dataclasses import replace

    return replace(settings, **kw)


@pytest.mark.slow
def test_server_refuses_photos_of_another_clip_model(synth, traversal_ref):
    from geoindex.serve.app import Engine
    from geoindex.serve.settings import ServeSettings

    with pytest.raises(IndexDirError, match="encoded with CLIP tiny-test"):
        Engine(ServeSettings(index=str(synth["cells"]), clip_model="ViT-L-14-random", photos=str(traversal_ref / "ref")))
    with pytest.raises(InvalidArgumentError, match="give --photos REF too"):
        Engine(ServeSettings(index=str(synth["cells"]), embeddings_only=True, photos_root=str(traversal_ref)))


@pytest.mark.slow
def test_bench_accuracy_compares_cells_alone_and_fused(synth, tmp_path):
    out = tmp_path / "acc.json"
    proc = subprocess.run([sys.executable, "benchmarks/bench_accuracy.py", "--csv", str(synth["queries"]), "--index",
                           str(synth["cells"]), "--photos", str(synth["ref"]), "--clip-model", "tiny-test",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = {r["gallery"].split(")")[-1].strip(): r for r in json.loads(out.read_text())["rows"][:2]}
    assert set(rows) == {"+ photos w=0", "+ photos w=0.25"} and rows["+ photos w=0"]["n"] == 30
    assert rows["+ photos w=0.25"]["median_km"] < rows["+ photos w=0"]["median_km"]


@pytest.mark.slow
def test_country_and_cell_filters_on_neighbours(synth):
    import duckdb
    import h3

    from geoindex.photos.gallery import PhotoGallery

    gallery = PhotoGallery(synth["ref"])
    con = duckdb.connect(str(synth["ref"] / "photos.duckdb"), read_only=True)
    country = con.execute("SELECT country, count(*) c FROM photos WHERE country IS NOT NULL GROUP BY 1 "
                          "ORDER BY c DESC LIMIT 1").fetchone()[0]
    want = {r[0] for r in con.execute("SELECT id FROM photos WHERE country = ?", [country]).fetchall()}
    assert set(gallery.region_ids(make_filter([country], [], []))) == want
    # a photo is inside an H3 filter cell when its res-15 cell descends from it (H3's hierarchy)
    parent = h3.cell_to_parent(h3.latlng_to_cell(gallery.lat[0], gallery.lng[0], 15), 1)
    ids = gallery.region_ids(make_filter([], [], [parent]))
    inside = [i for i in range(len(gallery))
              if h3.cell_to_parent(h3.latlng_to_cell(gallery.lat[i], gallery.lng[i], 15), 1) == parent]
    assert 0 in ids and ids.tolist() == inside
    _, I = gallery.search(_encode([_rows(synth["csv"])[0][0]]), 5, make_filter([], [], [parent]))
    assert I[0, 0] == 0 and set(I[0][I[0] >= 0]) <= set(ids)
