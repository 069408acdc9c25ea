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
from pathlib import Path

import numpy as np
import pytest

from geoindex.cells.geocode import haversine_km
from geoindex.errors import IndexDirError, InvalidArgumentError, TrainingDataError
from geoindex.locate.options import LocateResult, Prediction, QueryOptions
from geoindex.locate.regions import make_filter
from geoindex.photos.fusion import FusionSettings, Neighbour, fuse
from geoindex.train.synthetic import write_grid, write_photos

REPO = Path(__file__).resolve().parents[1]


# -- the fusion rule alone (fast) -------------------------------------------------------------------
def _pred(lat, lng, p, cell=1):
    return Prediction(cell=cell, lat=lat, lng=lng, probability=p, country=None, admin1=None, place=None, score=0.2)


def _nb(i, lat, lng, s):
    return Neighbour(i, f"{i}.png", lat, lng, s, 0.0, {})


CELLS = LocateResult([_pred(10, 10, 0.5, 1), _pred(40, 40, 0.3, 2), _pred(-20, 100, 0.2, 3)])


def test_weight_zero_is_the_cell_answer():
    out = fuse(CELLS, [_nb(0, -20.01, 100.01, 0.9)] * 3, FusionSettings(weight=0), 3)
    assert [p.cell for p in out.predictions] == [1, 2, 3]
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
    geo = Geolocator(synth["cells"], photos=synth["ref"])
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
        geo = Geolocator(synth["cells"], photos=synth["ref"], fusion=FusionSettings(weight=weight))
        top = np.array([(r.predictions[0].lat, r.predictions[0].lng) for r in geo.locate(xq, QueryOptions(k=1))])
        return haversine_km(truth[:, 0], truth[:, 1], top[:, 0], top[:, 1])

    cells, fused = errors(0.0), errors(FusionSettings().weight)
    # measured: median ~3,600 km fused vs ~6,200 km for the cells (the tiny CLIP tells colours apart coarsely)
    assert np.median(fused) < 0.75 * np.median(cells), (np.median(fused), np.median(cells))
    assert fused.mean() < cells.mean() and (fused < cells - 1).sum() > (fused > cells + 1).sum()


@pytest.mark.slow
def test_region_filters_apply_to_neighbours(synth):
    from geoindex.locate.geolocator import Geolocator

    geo = Geolocator(synth["cells"], photos=synth["ref"])
    region = make_filter([], ["-180,0,180,90"], [])  # the northern hemisphere
    res = geo.locate(_encode([_rows(synth["csv"])[0][0]]), QueryOptions(k=3, region=region))[0]
    inside = [n for n in res.neighbours]
    assert len(inside) == 10 and all(n.lat >= 0 for n in inside)
    assert all(p.lat >= 0 for p in res.predictions)


@pytest.mark.slow
def test_another_clip_model_or_weights_is_refused(synth, tmp_path):
    from geoindex.locate.geolocator import Geolocator
    from geoindex.photos.gallery import PhotoGallery

    with pytest.raises(IndexDirError, match="encoded with CLIP tiny-test.*--clip-model tiny-test"):
        PhotoGallery(synth["ref"]).check_encoder("ViT-L-14", None, None)
    other = tmp_path / "other"
    shutil.copytree(synth["ref"], other)
    m = json.loads((other / "manifest.json").read_text())
    m["encoder"]["image_head_sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexDirError, match="other GeoCLIP weights"):
        Geolocator(synth["cells"], photos=other)
    with pytest.raises(IndexDirError, match="not 'geoindex-photos/1'.*cell index"):
        Geolocator(synth["cells"], photos=synth["cells"])


@pytest.mark.slow
def test_compressed_index_agrees_with_exact_search(synth, tmp_path):
    """IVF + PQ codes + re-ranking from the exact store against the Flat gallery: recall@10 >= 0.9."""
    from geoindex.photos.build import PhotoBuildConfig, build_photos
    from geoindex.photos.gallery import PhotoGallery
    from geoindex.index.search import SearchSettings

    out = tmp_path / "ivf"
    build_photos(PhotoBuildConfig(csv=synth["csv"], out=out, clip_model="tiny-test", factory="IVF8,PQ16",
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
    real_index = photo_build._index
    monkeypatch.setattr(photo_build, "_index", lambda *a: (_ for _ in ()).throw(RuntimeError("disk full")))
    config = photo_build.PhotoBuildConfig(csv=csv, out=out, clip_model="tiny-test", progress=False)
    with pytest.raises(RuntimeError, match="disk full"):
        photo_build.build_photos(config)
    assert not out.exists() and (tmp_path / "ref.partial").is_dir()
    monkeypatch.setattr(photo_build, "_index", real_index)
    monkeypatch.setattr("geoindex.train.features.cache_features", lambda *a, **k: pytest.fail("encoded again"))
    m = photo_build.build_photos(config)
    assert m["photos"] == 20 and m["skipped"] == 1 and not (tmp_path / "ref.partial").exists()
    assert "missing.png" in (out / "skipped.csv").read_text()
    with pytest.raises(InvalidArgumentError, match="--overwrite"):
        photo_build.build_photos(config)


@pytest.mark.slow
def test_a_features_cache_is_reused_without_encoding(synth, tmp_path, monkeypatch):
    from geoindex.photos.build import PhotoBuildConfig, build_photos
    from geoindex.photos.gallery import PhotoGallery
    from geoindex.train.features import cache_features

    cache_features(synth["csv"], tmp_path / "feats", clip_model="tiny-test", device="cpu", progress=False)
    monkeypatch.setattr("geoindex.encoders.clip.load_clip", lambda *a, **k: pytest.fail("CLIP loaded"))
    with pytest.raises(TrainingDataError, match="holds tiny-test features"):
        build_photos(PhotoBuildConfig(csv=synth["csv"], out=tmp_path / "x", features=tmp_path / "feats",
                                      clip_model="ViT-L-14-random"))
    build_photos(PhotoBuildConfig(csv=synth["csv"], out=tmp_path / "ref", features=tmp_path / "feats",
                                  clip_model="tiny-test"))
    xq = _encode([r[0] for r in _rows(synth["csv"])[:5]])
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
                                "--max-memory", "1GB"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert cell_flag.returncode == 2 and "--max-memory is a cell-index flag" in cell_flag.stderr
