"""Refusals that need only the arguments come before any model loads, leave nothing behind, and
are one line (issue 38, item 6): an --out that cannot be written or whose folder is missing, a
run whose every photo is missing, and a CSV header that names a column twice."""

from __future__ import annotations

import pytest

from geoindex.errors import GalleryFileError, TrainingDataError

BAD_OUTS = {"missing parent": "nonexistent/a/b", "not writable": "/proc/x"}


@pytest.fixture
def missing_csv(tmp_path):
    path = tmp_path / "photos.csv"
    path.write_text("image,lat,lng\nnope1.png,1,2\nnope2.png,3,4\n")
    return path


def _no_model(monkeypatch):
    import geoindex.encoders.clip as clip

    monkeypatch.setattr(clip, "load_image_encoder", lambda *a, **k: pytest.fail("CLIP loaded before the refusal"))


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("out", BAD_OUTS.values(), ids=BAD_OUTS.keys())
def test_photo_build_out_refused_before_clip_loads(missing_csv, tmp_path, monkeypatch, capsys, out):
    """Before: --out /proc/x loaded CLIP, then a 50-line traceback (exit 1)."""
    from geoindex.cli.build import main

    _no_model(monkeypatch)
    out = tmp_path / out if not out.startswith("/") else out
    assert main(["--photos", str(missing_csv), "--out", str(out), "--clip-model", "tiny-test", "-q"]) == 2
    assert "--out" in _one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos.csv"]  # no missing parents created


@pytest.mark.parametrize("out", BAD_OUTS.values(), ids=BAD_OUTS.keys())
def test_train_features_out_refused_before_clip_loads(missing_csv, tmp_path, monkeypatch, capsys, out):
    """Before: --out /nonexistent/a/b created the missing parents."""
    from geoindex.cli.train import main

    _no_model(monkeypatch)
    out = tmp_path / out if not out.startswith("/") else out
    assert main(["features", "--csv", str(missing_csv), "--out", str(out), "--clip-model", "tiny-test"]) == 2
    assert "--out" in _one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos.csv"]


@pytest.mark.parametrize("command", ["train", "build"])
def test_every_photo_missing_leaves_no_folder(missing_csv, tmp_path, capsys, command):
    """Before: train features exited 2 but left its output folder (work.json, an empty shard)."""
    if command == "train":
        from geoindex.cli.train import main

        argv = ["features", "--csv", str(missing_csv), "--out", str(tmp_path / "feats"), "--no-progress"]
    else:
        from geoindex.cli.build import main

        argv = ["--photos", str(missing_csv), "--out", str(tmp_path / "ref"), "--no-progress", "-q"]
    assert main([*argv, "--clip-model", "tiny-test", "--device", "cpu"]) == 2
    assert "none of the 2 photos could be read" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos.csv"]


@pytest.mark.parametrize("header,words", [
    ("lat,lat,lng", "names column 'lat' twice (columns 1 and 2)"),
    ("LAT,lng,Lat", "names column 'Lat' twice (columns 1 and 3)"),
    ("lat,latitude,lng", "two columns for the same value, 'lat' and 'latitude'"),
    ("lat,lng,lon", "two columns for the same value, 'lng' and 'lon'"),
])
def test_duplicate_columns_are_refused_by_every_csv_reader(tmp_path, header, words):
    """Before: `lat,lat,lng` was read as the first lat column, silently."""
    from geoindex.cells.coordinates import count_latlng
    from geoindex.cells.csv_gallery import read_gallery_csv
    from geoindex.train.photos import read_photos

    coords = tmp_path / "points.csv"
    coords.write_text(header + "\n1,2,3\n")
    for read in (count_latlng, read_gallery_csv):  # geoindex embed; build --gallery-csv
        with pytest.raises(GalleryFileError, match="header") as e:
            read(coords)
        assert words in str(e.value) and len(str(e.value).splitlines()) == 1
    photos = tmp_path / "photos.csv"  # build --photos, train features
    photos.write_text("image," + header + "\na.png,1,2,3\n")
    with pytest.raises(TrainingDataError, match="header") as e:
        read_photos(photos)
    assert words.split(" (columns")[0] in str(e.value)  # one column further right


def test_embed_cli_names_the_duplicate_column(tmp_path, capsys):
    from geoindex.cli.embed import main

    (tmp_path / "p.csv").write_text("lat,lat,lng\n1,2,3\n")
    assert main([str(tmp_path / "p.csv"), "-o", str(tmp_path / "e.npy")]) == 2
    assert "names column 'lat' twice" in _one_line(capsys) and not (tmp_path / "e.npy").exists()
