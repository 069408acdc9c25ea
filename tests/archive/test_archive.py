"""``geolocate DIR --out results.parquet``: folders and lists in, one row per photo out, EXIF GPS
compared (or trusted), broken files as rows with an error, resumable after Ctrl-C and kill -9, a
second run adding only the new photos. The index is a res-1 Flat gallery built once per module
(tests/archive/conftest.py); the CLIP model is the tiny random one (its answers are meaningless, the
plumbing is what is tested)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from geoindex.archive import exif as exif_mod
from geoindex.archive.exif import dms_to_degrees, read_exif
from geoindex.archive.walk import find_photos, walk_folder
from geoindex.cells.geocode import haversine_km
from geoindex.cli.locate import main
from geoindex.errors import InvalidArgumentError
from tests.helpers import REPO
from tests.helpers.archive import OPERA, TOWER, archive, colour, dms, gps_ifd, jpeg_bytes, locate, write

BIN = Path(sys.executable).parent


def rows_of(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def summary(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_the_rate_leaves_out_loading_the_model(index, tmp_path, capsys, monkeypatch):
    """photos_per_s is the pipeline's pace "once the models are loaded": with ``--exif trust`` the
    model loads lazily, at the first photo without GPS, so its load (seconds for ViT-L/14) is taken
    out of the rate."""
    import time

    from geoindex.encoders import clip

    real = clip.load_image_encoder

    def slow_load(*args, **kw):
        time.sleep(1.0)
        return real(*args, **kw)

    monkeypatch.setattr(clip, "load_image_encoder", slow_load)
    archive(tmp_path / "photos")
    assert locate(index, tmp_path / "photos", "--out", tmp_path / "r.parquet", "--exif", "trust") == 0
    s = summary(capsys)
    assert s["new"] / s["photos_per_s"] <= s["seconds"] - 1.0, s


# -- walking ---------------------------------------------------------------------------------------
def test_walk_recurses_skips_hidden_matches_any_case_and_survives_link_loops(tmp_path):
    expected = archive(tmp_path / "photos")
    (tmp_path / "photos" / "trip" / "loop").symlink_to(tmp_path / "photos")  # a loop back to the top
    found = list(walk_folder(tmp_path / "photos"))
    rel = sorted(str(p.relative_to(tmp_path / "photos")) for p in found)
    # every photo once: through the loop they would come again as trip/loop/...
    assert rel == sorted(expected)
    assert all(p.is_absolute() for p in found)


def test_lists_folders_and_files_together_each_once(tmp_path):
    archive(tmp_path / "photos")
    extra = write(tmp_path / "other" / "x.webp", b"RIFF")
    listing = write(tmp_path / "list.txt", b"# my picks\nphotos/paris.jpg\n\n%s\nmissing.jpg\n" % str(extra).encode())
    found = find_photos([tmp_path / "photos" / "paris.jpg"], from_list=listing)
    assert [p.name for p in found] == ["paris.jpg", "x.webp", "missing.jpg"]  # a listed missing file: a row
    both = find_photos([tmp_path / "photos", tmp_path / "photos" / "paris.jpg"])
    assert len(both) == len({str(p) for p in both}) == 6


def test_a_folder_without_photos_or_a_missing_input_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty" / ".hidden.jpg", jpeg_bytes())
    with pytest.raises(InvalidArgumentError, match="no photos found"):
        find_photos([tmp_path / "empty"])
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        find_photos([tmp_path / "nope"])


# -- EXIF --------------------------------------------------------------------------------------------
def test_exif_gps_dms_with_hemispheres_and_datetime():
    got = read_exif(jpeg_bytes(gps=gps_ifd(-33.8568, -70.6483), taken="2021:12:31 23:59:58"))
    assert got.lat == pytest.approx(-33.8568, abs=1e-6) and got.lng == pytest.approx(-70.6483, abs=1e-6)
    assert got.taken_at == datetime(2021, 12, 31, 23, 59, 58)
    assert read_exif(jpeg_bytes(gps=gps_ifd(*TOWER))).lat == pytest.approx(TOWER[0], abs=1e-6)


def test_photo_without_exif_or_not_an_image_reads_as_nothing():
    for data in (jpeg_bytes(), b"", b"garbage", jpeg_bytes()[:50]):
        got = read_exif(data)
        assert (got.lat, got.lng, got.taken_at) == (None, None, None)


@pytest.mark.parametrize("gps", [
    {1: "N", 2: (IFDRational(48, 1), IFDRational(51, 0), IFDRational(0, 1)), 3: "E", 4: dms(2.29)},  # 0 denominator
    {1: "N", 2: (IFDRational(95, 1), IFDRational(0, 1), IFDRational(0, 1)), 3: "E", 4: dms(2.29)},  # latitude > 90
    {1: "N", 2: dms(48.85), 3: "E", 4: (IFDRational(181, 1), IFDRational(0, 1), IFDRational(0, 1))},  # lng > 180
    {1: "N", 2: (IFDRational(48, 1), IFDRational(75, 1), IFDRational(0, 1)), 3: "E", 4: dms(2.29)},  # 75 minutes
    {2: dms(48.85), 4: dms(2.29)},  # no N/S, E/W: a sign would be a guess
    {1: "Q", 2: dms(48.85), 3: "E", 4: dms(2.29)},  # not a hemisphere
    {1: "N", 2: dms(48.85)},  # latitude only
    {1: "N", 2: dms(0.0), 3: "E", 4: dms(0.0)},  # 0, 0: no fix
    {9: "V", 1: "N", 2: dms(48.85), 3: "E", 4: dms(2.29)},  # receiver status void
])
def test_malformed_gps_reads_as_missing_never_an_error(gps):
    data = jpeg_bytes(gps=gps, taken="2020:01:02 03:04:05")
    got = read_exif(data)
    assert (got.lat, got.lng) == (None, None)
    assert got.taken_at == datetime(2020, 1, 2, 3, 4, 5)  # a broken position leaves the time alone


def test_zero_denominator_reaches_the_file():
    """The zero-denominator case above is real: the rational is stored as n/0, not cleaned by PIL."""
    gps = {1: "N", 2: (IFDRational(48, 1), IFDRational(51, 0), IFDRational(0, 1)), 3: "E", 4: dms(2.29)}
    stored = Image.open(io.BytesIO(jpeg_bytes(gps=gps))).getexif().get_ifd(exif_mod.GPS_IFD)[2][1]
    assert stored.denominator == 0


def test_dms_edge_values():
    assert dms_to_degrees((90, 0, 0), "N", "N", "S", 90) == 90
    assert dms_to_degrees(((179, 1), (59, 1), (5999, 100)), b"W\x00", "E", "W", 180) == pytest.approx(-179.99999722)
    assert dms_to_degrees((12.5,), "S", "N", "S", 90) == -12.5  # decimal degrees in one rational
    assert dms_to_degrees(((1, 0), 0, 0), "N", "N", "S", 90) is None
    assert dms_to_degrees((-3, 0, 0), "N", "N", "S", 90) is None
    assert dms_to_degrees(None, "N", "N", "S", 90) is None


# -- end to end --------------------------------------------------------------------------------------
def test_folder_to_parquet_one_row_per_photo(index, tmp_path, capsys):
    expected = archive(tmp_path / "photos")
    out = tmp_path / "results.parquet"
    assert locate(index, tmp_path / "photos", "--out", out, "--top-k", "3", "--confidence", "0.5") == 0
    s = summary(capsys)
    assert s["photos"] == s["new"] == len(expected) and s["errors"] == 3 and not s["interrupted"]
    table = pq.read_table(out)
    assert table.schema.field("top_k").type.value_type.num_fields == 9  # a list of structs
    assert str(table.schema.field("taken_at").type) == "timestamp[ms]"
    rows = {str(Path(r["path"]).relative_to(tmp_path / "photos")): r for r in table.to_pylist()}
    assert set(rows) == set(expected)
    for name, what in expected.items():
        r = rows[name]
        if what == "error":
            assert r["error"] and r["lat"] is None and r["top_k"] is None, r
            continue
        assert r["error"] == "" and r["source"] == "model"
        assert len(r["top_k"]) == 3 and r["top_k"][0]["lat"] == r["lat"] and r["top_k"][0]["cell"] == r["cell"]
        assert [p["rank"] for p in r["top_k"]] == [1, 2, 3]
        probs = [p["probability"] for p in r["top_k"]]
        assert probs == sorted(probs, reverse=True) and r["probability"] == probs[0]
        assert len(r["cell"]) == 15 and r["cell"].startswith("81")  # H3 res 1, hex
        assert r["confidence_km"] > 0
    paris, sydney, nogps = rows["paris.jpg"], rows["trip/SYDNEY.JPG"], rows["trip/deeper/nogps.png"]
    assert (paris["exif_lat"], paris["exif_lng"]) == pytest.approx(TOWER, abs=1e-6)
    assert paris["taken_at"] == datetime(2023, 7, 14, 18, 3, 22)
    assert paris["km_from_exif"] == pytest.approx(float(haversine_km(*TOWER, paris["lat"], paris["lng"])), rel=1e-6)
    assert sydney["exif_lat"] == pytest.approx(OPERA[0], abs=1e-6) and sydney["taken_at"] is None
    assert nogps["exif_lat"] is None and nogps["km_from_exif"] is None
    assert "not an image" in rows["notes.jpg"]["error"] and "empty" in rows["empty.jpeg"]["error"]
    assert "truncated" in rows["trip/truncated.jpg"]["error"]


def test_the_same_rows_in_every_format(index, tmp_path, capsys):
    photos = tmp_path / "photos"
    archive(photos)
    outs = {fmt: tmp_path / f"r.{fmt}" for fmt in ("parquet", "csv", "jsonl", "geojson")}
    for out in outs.values():
        assert locate(index, photos, "--out", out, "--top-k", "2") == 0
    ref = {r["path"]: r for r in rows_of(outs["parquet"])}
    import csv as csv_mod

    with open(outs["csv"], newline="", encoding="utf-8") as f:
        csv = list(csv_mod.DictReader(f))
    jsonl = [json.loads(line) for line in outs["jsonl"].read_text().splitlines()]
    geo = json.loads(outs["geojson"].read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(ref) == len(csv) == len(jsonl)
    for rec in csv:
        r = ref[rec["path"]]
        assert (json.loads(rec["top_k"]) if rec["top_k"] else None) == r["top_k"]
        assert rec["error"] == r["error"] and list(rec) == list(r)
        assert (float(rec["lat"]), float(rec["lng"])) == (r["lat"], r["lng"]) if r["lat"] is not None else rec["lat"] == ""
    for rec in jsonl:
        r = ref[rec["path"]]
        assert rec["top_k"] == r["top_k"] and rec["lat"] == r["lat"]
        assert rec["taken_at"] == (r["taken_at"].isoformat() if r["taken_at"] else None)
    for f in geo["features"]:
        r = ref[f["properties"]["path"]]
        assert f["geometry"] == ({"type": "Point", "coordinates": [r["lng"], r["lat"]]} if r["lat"] is not None else None)


def test_second_run_adds_only_the_new_photos(index, tmp_path, capsys):
    photos = tmp_path / "photos"
    for i in range(5):
        write(photos / f"p{i}.jpg", jpeg_bytes(colour(i)))
    out = tmp_path / "r.parquet"
    assert locate(index, photos, "--out", out) == 0
    first = {r["path"]: r for r in rows_of(out)}
    assert summary(capsys)["new"] == 5
    assert locate(index, photos, "--out", out) == 0  # nothing new: nothing located, file unchanged
    assert summary(capsys)["new"] == 0 and rows_of(out) == list(first.values())
    for i in (5, 6):
        write(photos / "later" / f"p{i}.jpg", jpeg_bytes(colour(i)))
    assert locate(index, photos, "--out", out) == 0
    s = summary(capsys)
    assert (s["new"], s["photos"]) == (2, 7)
    second = rows_of(out)
    assert len({r["path"] for r in second}) == 7
    assert [r for r in second if r["path"] in first] == list(first.values())  # old rows untouched


def test_exif_trust_skips_the_model_for_photos_with_gps(index, tmp_path, capsys):
    photos = tmp_path / "photos"
    archive(photos)
    out = tmp_path / "r.jsonl"
    assert locate(index, photos, "--out", out, "--exif", "trust") == 0
    assert summary(capsys)["from_exif"] == 2
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    paris = rows["paris.jpg"]
    assert paris["source"] == "exif" and (paris["lat"], paris["lng"]) == pytest.approx(TOWER, abs=1e-6)
    assert paris["country"] == "FR" and paris["probability"] is None and paris["km_from_exif"] == 0
    assert paris["cell"] == __import__("h3").latlng_to_cell(*TOWER, 1)
    assert rows["SYDNEY.JPG"]["country"] == "AU"
    assert rows["nogps.png"]["source"] == "model" and rows["nogps.png"]["probability"] > 0


def test_refine_moves_the_point_off_the_cell_centre(index, tmp_path, capsys):
    photos = tmp_path / "photos"
    write(photos / "a.jpg", jpeg_bytes((200, 40, 40)))
    assert locate(index, photos, "--out", tmp_path / "plain.parquet") == 0
    assert locate(index, photos, "--out", tmp_path / "refined.parquet", "--refine", "2") == 0
    plain, refined = rows_of(tmp_path / "plain.parquet")[0], rows_of(tmp_path / "refined.parquet")[0]
    import h3

    assert (plain["lat"], plain["lng"]) == pytest.approx(h3.cell_to_latlng(plain["cell"]))
    assert (refined["lat"], refined["lng"]) != pytest.approx(h3.cell_to_latlng(refined["cell"]))


def test_bad_out_or_no_photos_fail_in_one_line_before_any_work(index, tmp_path, capsys):
    photos = tmp_path / "photos"
    write(photos / "a.jpg", jpeg_bytes())
    (tmp_path / "empty").mkdir()
    cases = [(photos, tmp_path / "no" / "such" / "dir" / "r.parquet", "does not exist"),
             (photos, tmp_path / "r.xlsx", ".parquet, .csv, .jsonl or .geojson"),
             (photos, tmp_path, "is a folder"),
             (tmp_path / "empty", tmp_path / "r.parquet", "no photos found")]
    for src, out, words in cases:
        assert locate(index, src, "--out", out) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err
    assert not (tmp_path / ".r.parquet.parts").exists()  # nothing started
    assert main(["--out", str(tmp_path / "r.parquet"), "--index", str(index)]) == 2
    assert "--out needs photos" in capsys.readouterr().err
    assert locate(index, photos, "--out", tmp_path / "r.csv", "--text", "a beach") == 2
    assert "--text" in capsys.readouterr().err


def test_other_settings_are_refused_until_restart(index, tmp_path, capsys):
    photos = tmp_path / "photos"
    write(photos / "a.jpg", jpeg_bytes())
    out = tmp_path / "r.parquet"
    assert locate(index, photos, "--out", out, "--top-k", "2") == 0
    assert locate(index, photos, "--out", out, "--top-k", "4") == 2
    err = capsys.readouterr().err
    assert "top_k: 2 then, 4 now" in err and "--restart" in err
    assert locate(index, photos, "--out", out, "--top-k", "4", "--restart") == 0
    assert summary(capsys)["new"] == 1 and len(rows_of(out)[0]["top_k"]) == 4


def test_strict_stops_at_the_first_broken_photo_with_the_rows_before_saved(index, tmp_path, capsys):
    photos = tmp_path / "photos"
    write(photos / "a.jpg", jpeg_bytes())
    write(photos / "b.jpg", b"broken")
    write(photos / "c.jpg", jpeg_bytes((1, 2, 3)))
    out = tmp_path / "r.parquet"
    assert locate(index, photos, "--out", out, "--strict") == 2
    assert "b.jpg" in capsys.readouterr().err
    assert [Path(r["path"]).name for r in rows_of(out)] == ["a.jpg"]


def test_ctrl_c_saves_what_is_done_and_the_same_command_continues(index, tmp_path, capsys, monkeypatch):
    from geoindex.archive import runner

    photos = tmp_path / "photos"
    for i in range(6):
        write(photos / f"p{i}.jpg", jpeg_bytes(colour(i)))
    out = tmp_path / "r.csv"
    real, calls = runner._Batcher.rows, {"n": 0}

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(runner._Batcher, "rows", interrupted)
    assert locate(index, photos, "--out", out, "--batch-size", "2") == 130
    assert "run the same command to continue" in capsys.readouterr().err
    import pandas as pd

    assert len(pd.read_csv(out)) == 4
    monkeypatch.undo()
    assert locate(index, photos, "--out", out, "--batch-size", "2") == 0
    s = summary(capsys)
    assert (s["new"], s["photos"]) == (2, 6)
    assert sorted(pd.read_csv(out)["path"].map(lambda p: Path(p).name)) == [f"p{i}.jpg" for i in range(6)]


def test_pipeline_images_embed_as_the_full_photo(tmp_path):
    """The workers hand CLIP model-sized images: the embeddings are those of the full photos."""
    from geoindex.archive.pipeline import decode, model_sized
    from geoindex.encoders.clip import load_image_encoder
    from geoindex.encoders.images import load_image

    encoder = load_image_encoder("tiny-test")
    shrink = model_sized(encoder.preprocess)
    paths = [write(tmp_path / "wide.jpg", jpeg_bytes((200, 100, 50), size=(1600, 500))),
             write(tmp_path / "tall.jpg", jpeg_bytes((20, 100, 250), size=(300, 900))),
             write(tmp_path / "big.jpg", jpeg_bytes((90, 90, 90), size=(2000, 1500)))]
    small = [decode(str(p), shrink=shrink).image for p in paths]
    side = encoder.preprocess.size  # 224 for ViT-L/14, 64 for the tiny model
    assert all(im.size == (side, side) for im in small)
    full = encoder.encode_images([load_image(p) for p in paths])
    np.testing.assert_array_equal(encoder.encode_images(small), full)


def test_over_limit_and_unreadable_files_are_rows(index, tmp_path, capsys):
    photos = tmp_path / "photos"
    write(photos / "big.jpg", jpeg_bytes(size=(800, 600)))
    write(photos / "ok.jpg", jpeg_bytes(size=(100, 80)))
    (photos / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    out = tmp_path / "r.parquet"
    listing = write(tmp_path / "list.txt", b"photos/ok.jpg\nphotos/big.jpg\nphotos/dangling.jpg\nphotos/gone.jpg\n")
    assert locate(index, "--from-list", listing, "--out", out, "--max-pixels", "100000") == 0
    rows = {Path(r["path"]).name: r for r in rows_of(out)}
    assert list(rows) == ["ok.jpg", "big.jpg", "dangling.jpg", "gone.jpg"]
    assert rows["ok.jpg"]["error"] == ""
    assert "over the limit" in rows["big.jpg"]["error"]
    assert "cannot be read" in rows["dangling.jpg"]["error"] and "cannot be read" in rows["gone.jpg"]["error"]


# -- the HTTP answer -------------------------------------------------------------------------------------
def test_uploaded_photos_get_their_exif_fields_in_the_answer(index):
    from fastapi.testclient import TestClient

    from geoindex.serve.app import create_app
    from geoindex.serve.settings import ServeSettings

    with TestClient(create_app(ServeSettings(index=str(index), clip_model="tiny-test"))) as client:
        _check_exif_answer(client)


def _check_exif_answer(client):
    files = [("images", ("paris.jpg", jpeg_bytes(gps=gps_ifd(*TOWER), taken="2023:07:14 18:03:22"), "image/jpeg")),
             ("images", ("plain.jpg", jpeg_bytes((10, 200, 10)), "image/jpeg")),
             ("images", ("bad-gps.jpg", jpeg_bytes(gps={1: "N", 2: dms(95.0), 3: "E", 4: dms(2.0)}), "image/jpeg"))]
    r = client.post("/v1/locate", files=files, data={"top_k": "2"})
    assert r.status_code == 200, r.text
    paris, plain, bad = r.json()["results"]
    top = paris["predictions"][0]
    assert (paris["exif_lat"], paris["exif_lng"]) == pytest.approx(TOWER, abs=1e-6)
    assert paris["taken_at"] == "2023-07-14T18:03:22"
    assert paris["km_from_exif"] == pytest.approx(float(haversine_km(*TOWER, top["lat"], top["lng"])), rel=1e-9)
    for other in (plain, bad):
        assert (other["exif_lat"], other["exif_lng"], other["km_from_exif"], other["taken_at"]) == (None,) * 4
    fields = client.get("/openapi.json").json()["components"]["schemas"]["Result"]["properties"]
    assert {"exif_lat", "exif_lng", "km_from_exif", "taken_at"} <= set(fields)
    assert client.post("/v1/locate?format=geojson", files=files[:1]).status_code == 200


# -- kill -9 -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_after_kill_9_loses_and_duplicates_nothing(index, tmp_path):
    """The installed command, killed with SIGKILL after its second commit, then run again: every
    photo once, the results file always a whole table."""
    photos = tmp_path / "photos"
    n = 40
    for i in range(n):
        write(photos / f"d{i // 10}" / f"p{i:02d}.jpg", jpeg_bytes(colour(i), size=(320, 240)))
    out = tmp_path / "r.parquet"
    parts = tmp_path / ".r.parquet.parts"
    cmd = [shutil.which("geolocate", path=str(BIN)) or "geolocate", str(photos), "--out", str(out), "--index",
           str(index), "--clip-model", "tiny-test", "--batch-size", "2", "--commit-every", "2", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(list(parts.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be killed: make the test photos bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    saved = sum(pq.read_metadata(p).num_rows for p in parts.glob("part-*.parquet"))
    assert 0 < saved < n
    assert not out.exists()  # assembled only at the end: never a half-written table
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    s = json.loads(again.stdout)
    assert s["photos"] == n and s["new"] == n - saved and s["errors"] == 0
    paths = [r["path"] for r in rows_of(out)]
    assert len(paths) == len(set(paths)) == n
    assert sorted(Path(p).name for p in paths) == [f"p{i:02d}.jpg" for i in range(n)]


@pytest.mark.parametrize("name", ["userdata.parquet", "userdata.csv"])
def test_an_out_that_is_not_our_results_is_never_replaced(index, tmp_path, capsys, name):
    """Issue 38 item 2: the user's own table at --out was replaced with exit 0."""
    photos = tmp_path / "photos"
    write(photos / "a.jpg", jpeg_bytes())
    out = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.table({"customer": ["x", "y"]}), out)
    else:
        out.write_text("customer\nx\ny\n")
    before = out.read_bytes()
    assert locate(index, photos, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a results table geoindex wrote" in err and "--overwrite" in err
    assert out.read_bytes() == before and not (tmp_path / f".{name}.parts").exists()
    assert locate(index, photos, "--out", out, "--overwrite") == 0  # explicit: replaced
    assert summary(capsys)["photos"] == 1 and out.read_bytes() != before
    assert locate(index, photos, "--out", out) == 0  # now ours: resumed, nothing new
    assert summary(capsys)["new"] == 0


def test_our_parquet_is_recognised_without_its_parts_folder(index, tmp_path, capsys):
    photos = tmp_path / "photos"
    write(photos / "a.jpg", jpeg_bytes())
    out = tmp_path / "r.parquet"
    assert locate(index, photos, "--out", out) == 0
    shutil.rmtree(tmp_path / ".r.parquet.parts")
    assert locate(index, photos, "--out", out) == 0  # its schema says it is ours: located again, replaced
    assert summary(capsys)["photos"] == 1
