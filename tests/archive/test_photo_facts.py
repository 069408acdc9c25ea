"""A photo's facts in the results table (issue 34, item 4): file hash, size, camera, GPS altitude and
direction, DateTime when DateTimeOriginal is absent, radius_km and place_km; failed rows hold nulls."""

import hashlib
import io

import duckdb
import pandas as pd
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from geoindex.archive import exif as exif_mod
from geoindex.archive.exif import read_exif
from tests.helpers.archive import TOWER, gps_ifd, locate, write


def photo(size=(96, 64), gps=None, datetime_only=None, make=None, model=None) -> bytes:
    img = Image.new("RGB", size, (40, 90, 160))
    for x in range(0, size[0], 6):
        img.putpixel((x, size[1] // 2), (250, 250, 0))
    exif = Image.Exif()
    if gps is not None:
        exif[exif_mod.GPS_IFD] = gps
    if datetime_only is not None:
        exif[exif_mod.DATETIME] = datetime_only
    if make is not None:
        exif[exif_mod.MAKE], exif[exif_mod.MODEL] = make, model
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def test_read_exif_gets_every_fact():
    gps = {**gps_ifd(*TOWER), 5: b"\x01", 6: IFDRational(1250, 10), 17: IFDRational(2705, 10)}
    data = photo(gps=gps, datetime_only="2022:05:06 07:08:09", make="Canon", model="EOS R5")
    got = read_exif(data)
    assert (got.width, got.height, got.camera_make, got.camera_model) == (96, 64, "Canon", "EOS R5")
    assert got.altitude_m == -125.0 and got.direction_deg == 270.5
    assert got.taken_at.isoformat() == "2022-05-06T07:08:09"  # DateTime: no DateTimeOriginal
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    bare = read_exif(b"not an image")
    assert bare.sha256 == hashlib.sha256(b"not an image").hexdigest() and bare.width is None


def test_archive_rows_carry_the_facts_read_by_duckdb_and_pandas(flat_r2, tmp_path, capsys):
    idx = flat_r2
    root = tmp_path / "photos"
    data = photo(gps={**gps_ifd(*TOWER), 6: IFDRational(35, 1)}, make="Fujifilm", model="X100V")
    write(root / "tower.jpg", data)
    write(root / "plain.jpg", photo(size=(50, 40)))
    write(root / "broken.jpg", b"\xff\xd8 not really")
    out = tmp_path / "r.parquet"
    assert locate(idx, root, "--out", out, "--top-k", "2") == 0
    capsys.readouterr()
    frame = pd.read_parquet(out).set_index(pd.read_parquet(out).path.map(lambda p: p.rsplit("/", 1)[-1]))
    tower = frame.loc["tower.jpg"]
    assert tower.sha256 == hashlib.sha256(data).hexdigest() and (tower.width, tower.height) == (96, 64)
    assert (tower.camera_make, tower.camera_model, tower.exif_altitude_m) == ("Fujifilm", "X100V", 35.0)
    assert tower.radius_km > 0 and tower.place_km >= 0
    assert pd.isna(frame.loc["plain.jpg"].camera_make) and pd.isna(frame.loc["plain.jpg"].exif_altitude_m)
    broken = frame.loc["broken.jpg"]
    assert broken.error and pd.isna(broken.source) and pd.isna(broken.radius_km) and pd.isna(broken.width)
    con = duckdb.connect()
    got = con.execute(f"SELECT count(*) FILTER (WHERE source = ''), count(*) FILTER (WHERE sha256 IS NOT NULL), "
                      f"max(width), count(DISTINCT run_id), count(run_id) FROM read_parquet('{out}')").fetchone()
    assert got == (0, 3, 96, 1, 3)
    import json

    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(out).metadata[b"geoindex.provenance"])
    assert meta["run_id"] == frame.run_id.iloc[0] and meta["index"] == str(idx)
    assert meta["index_manifest_sha256"] == hashlib.sha256((idx / "manifest.json").read_bytes()).hexdigest()
    assert meta["clip_model"] == "tiny-test" and meta["location_weights_sha256"] and meta["geoindex_version"]
    kv = con.execute(f"SELECT value FROM parquet_kv_metadata('{out}') WHERE key = 'geoindex.provenance'").fetchone()
    assert json.loads(kv[0])["run_id"] == meta["run_id"]


def test_single_photo_locate_reports_its_exif(flat_r2, tmp_path, capsys):
    import json

    from geoindex.cli.locate import main as geolocate
    from geoindex.cells.geocode import haversine_km

    write(tmp_path / "tower.jpg", photo(gps=gps_ifd(*TOWER), datetime_only="2024:01:02 03:04:05"))
    write(tmp_path / "plain.jpg", photo())
    argv = ["--index", str(flat_r2), str(tmp_path / "tower.jpg"), str(tmp_path / "plain.jpg"),
            "--clip-model", "tiny-test", "-k", "2"]
    assert geolocate([*argv, "--format", "json"]) == 0
    tower, plain = json.loads(capsys.readouterr().out)
    top = tower["predictions"][0]
    assert tower["exif_lat"] == TOWER[0] and tower["taken_at"] == "2024-01-02T03:04:05"
    assert (tower["exif_country"], tower["exif_admin1"]) == ("FR", "Île-de-France") and tower["exif_place"]
    assert tower["km_from_exif"] == float(haversine_km(top["lat"], top["lng"], *TOWER))
    assert (plain["exif_lat"], plain["km_from_exif"], plain["taken_at"]) == (None, None, None)
    assert geolocate(argv) == 0
    assert "km from the top answer" in capsys.readouterr().out
