"""End to end through ``geoindex.cli.build.main`` on res 0-2 galleries."""

import hashlib
import shutil
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import faiss
import numpy as np
import pytest

from geoindex.cli.build import main
from geoindex.store.cell_table import hot_files
from tests.helpers.build import stop_at_shard_write
from geoindex.pipeline.pipeline import work_dir_for
from geoindex.errors import IndexDirError
from geoindex.encoders.location import encode_latlng, location_weights_sha256
from geoindex.store.manifest import open_index_dir
from tests.helpers import REPO


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_index_dir_contract(built_r2):
    idx = open_index_dir(built_r2, verify="full", weights_sha256=location_weights_sha256())
    m = idx.manifest
    assert sorted(p.name for p in built_r2.iterdir()) == ["cells.duckdb", "hot", "manifest.json", "vectors.faiss"]
    assert sorted(m["files"]) == sorted(["cells.duckdb", "vectors.faiss", *hot_files()])
    assert m["gallery"] == {"kind": "h3", "resolution": 2, "cells": "land", "count": m["index"]["ntotal"]}
    assert m["index"]["factory"] == "IVFH3r0,SQ8" and m["index"]["search"] == "nprobe=16"
    assert m["index"]["nlist"] <= 122
    for key in ("faiss", "torch", "h3", "duckdb", "geoindex"):
        assert m["versions"][key]
    assert m["timings_s"]["total"] > 0 and m["encoder"]["logit_scale"] > 0
    assert m["self_check"]["recall_at_10"] >= 0.9
    assert not work_dir_for(built_r2).exists()


def test_cells_table(built_r2):
    con = duckdb.connect(str(built_r2 / "cells.duckdb"), read_only=True)
    cols = {r[0]: r[1] for r in con.execute("DESCRIBE cells").fetchall()}
    for name, kind in [("cell", "BIGINT"), ("lat", "DOUBLE"), ("lng", "DOUBLE"), ("area_km2", "DOUBLE"),
                       ("is_land", "BOOLEAN"), ("country", "VARCHAR"), ("admin1", "VARCHAR"), ("place", "VARCHAR")]:
        assert cols[name] == kind
    n, distinct, res = con.execute("SELECT count(*), count(DISTINCT cell), max(res) FROM cells").fetchone()
    assert n == distinct == json.loads((built_r2 / "manifest.json").read_text())["index"]["ntotal"]
    assert res == 2
    # A res-2 cell averages ~86,800 km^2
    lo, hi = con.execute("SELECT min(area_km2), max(area_km2) FROM cells").fetchone()
    assert 30_000 < lo < hi < 130_000
    # The cell holding Paris: centre within ~200 km, geocoded to France
    import h3
    paris = h3.latlng_to_cell(48.8566, 2.3522, 2)
    row = con.execute("SELECT country, place, lat, lng FROM cells WHERE cell = ?", [h3.str_to_int(paris)]).fetchone()
    assert row is not None and row[0] == "FR"
    assert con.execute("SELECT count(*) FROM cells WHERE country IS NOT NULL AND length(country) <> 2").fetchone()[0] == 0
    assert con.execute("SELECT avg(CASE WHEN country IS NULL THEN 1 ELSE 0 END) FROM cells").fetchone()[0] < 0.15


def test_index_ids_are_cells_and_search_finds_neighbours(built_r2, encoder):
    index = faiss.read_index(str(built_r2 / "vectors.faiss"))
    faiss.ParameterSpace().set_index_parameters(index, "nprobe=16")
    con = duckdb.connect(str(built_r2 / "cells.duckdb"), read_only=True)
    cells, lat, lng = (con.execute("SELECT cell, lat, lng FROM cells ORDER BY cell").fetchnumpy()[k]
                       for k in ("cell", "lat", "lng"))
    xq = encode_latlng(encoder, np.column_stack((lat, lng))[:200])
    _, I = index.search(xq, 1)
    assert np.mean(I[:, 0] == cells[:200]) >= 0.95


def test_resolution_10_needs_distributed_build(tmp_path, capsys):
    assert main(["--resolution", "10", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "distributed" in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args,match", [
    (["--resolution", "abc"], "not an integer"),
    (["--resolution", "-3"], "out of range"),
    (["--resolution", "1", "--factory", "IVF99,Nope"], "bad index factory string"),
    (["--resolution", "1", "--cells", "sea"], "is not land, all or an H3 cell id"),
    (["--resolution", "1", "--search", "bogus=3", "--factory", "IVF,SQ8"], "search parameters"),
    (["--resolution", "1", "--batch-size", "0"], "positive"),
])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys, args, match):
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--no-progress", "-q"]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # refused before anything was written


@pytest.mark.slow  # over ~4 s: the full suite (make test-all) runs it
def test_nonempty_out_is_refused_then_overwritten(tmp_path, capsys):
    out = tmp_path / "idx"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["--resolution", "0", "--out", str(out), "--no-progress", "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    assert main(["--resolution", "0", "--out", str(out), "--overwrite", "--no-progress", "-q"]) == 0
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no staging or old copies left


def test_bad_csv_gallery(tmp_path, capsys):
    csv = tmp_path / "g.csv"
    csv.write_text("lat,lng\n10,20\n10,200\n")
    assert main(["--gallery-csv", str(csv), "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "10.0, 200.0" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("out,match", [
    ("file/idx", "is a file, not a directory"),  # --out under a path whose parent is a file
    ("/sys/geoindex-test/idx", "cannot write the index"),  # not writable, even for root
])
def test_unwritable_out_is_one_line(tmp_path, capsys, out, match):
    (tmp_path / "file").write_text("not a directory")
    target = tmp_path / out if not out.startswith("/") else Path(out)
    assert main(["--resolution", "0", "--out", str(target), "--no-progress", "-q"]) == 2
    err = capsys.readouterr().err
    assert match in err and "--out" in err and "Traceback" not in err and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["file"]


@pytest.mark.parametrize("data,match", [
    ("lat,lng\n10,20\n".encode("utf-16"), "not UTF-8"),
    (b"lat,lng\n10,20\n1,2,3\n", "line 3"),
    (b"10,20\n1,2,3\n", "line 2"),
])
def test_csv_that_is_not_lat_lng_text_is_refused(tmp_path, capsys, data, match):
    csv = tmp_path / "g.csv"
    csv.write_bytes(data)
    assert main(["--gallery-csv", str(csv), "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_csv_gallery_ids_are_row_numbers(tmp_path):
    rng = np.random.default_rng(5)
    pts = np.column_stack((rng.uniform(-60, 70, 300), rng.uniform(-180, 180, 300)))
    csv = tmp_path / "g.csv"
    csv.write_text("LAT,LON\n" + "\n".join(f"{a:.6f},{b:.6f}" for a, b in pts) + "\n")
    out = tmp_path / "o"
    assert main(["--gallery-csv", str(csv), "--out", str(out), "--no-progress", "-q"]) == 0
    m = open_index_dir(out, verify="full").manifest
    assert m["gallery"]["kind"] == "csv" and m["index"]["factory"] == "Flat"
    con = duckdb.connect(str(out / "cells.duckdb"), read_only=True)
    assert con.execute("SELECT min(cell), max(cell), count(*), max(res) FROM cells").fetchone() == (0, 299, 300, None)
    assert m["self_check"]["self_hit_at_1"] == 1.0


@pytest.mark.slow
def test_killed_build_resumes_to_the_same_index(tmp_path, monkeypatch, capsys, built_r2):
    args = ["--resolution", "2", "--factory", "IVFH3,SQ8", "--no-progress", "-q"]
    clean = built_r2  # the same build, never stopped

    out = tmp_path / "resumed"
    stop_at_shard_write(monkeypatch, 40)  # as if Ctrl-C'd mid-build
    assert main([*args, "--out", str(out)]) == 130
    assert "resume" in capsys.readouterr().err
    assert not out.exists()
    assert len(list((work_dir_for(out) / "shards").glob("*.npz"))) == 39
    assert not list((work_dir_for(out) / "shards").glob("*.tmp"))
    monkeypatch.undo()

    assert main([*args, "--out", str(out)]) == 0
    assert sha(out / "vectors.faiss") == sha(clean / "vectors.faiss")
    a = duckdb.connect(str(out / "cells.duckdb"), read_only=True).execute("SELECT * FROM cells ORDER BY cell").fetchall()
    b = duckdb.connect(str(clean / "cells.duckdb"), read_only=True).execute("SELECT * FROM cells ORDER BY cell").fetchall()
    assert a == b


@pytest.mark.slow
def test_sigkill_leaves_no_index_and_resumes(tmp_path):
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "build_index", "--resolution", "3", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard_dir = work_dir_for(out) / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shard_dir.glob("*.npz"))) < 5:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    done = len(list(shard_dir.glob("*.npz")))
    assert 5 <= done < 122
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"resuming: {done} finished shards" in res.stderr
    assert open_index_dir(out, verify="full").manifest["gallery"]["count"] > 10_000


def test_open_index_dir_refusals(built_r2, tmp_path):
    with pytest.raises(IndexDirError, match="does not exist"):
        open_index_dir(tmp_path / "nope")
    with pytest.raises(IndexDirError, match="no manifest.json"):
        open_index_dir(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(built_r2, copy)
    with pytest.raises(IndexDirError, match="another model"):
        open_index_dir(copy, weights_sha256="0" * 64)
    with open(copy / "vectors.faiss", "ab") as f:
        f.write(b"x")
    with pytest.raises(IndexDirError, match="changed or truncated"):
        open_index_dir(copy)
    data = bytearray((built_r2 / "vectors.faiss").read_bytes())
    data[-1] ^= 0xFF
    (copy / "vectors.faiss").write_bytes(bytes(data))
    open_index_dir(copy, verify="size")
    with pytest.raises(IndexDirError, match="SHA-256"):
        open_index_dir(copy, verify="full")


def test_concurrent_build_of_the_same_dir_is_refused(tmp_path, capsys):
    import fcntl

    out = tmp_path / "busy"
    lock = open(tmp_path / ".busy.partial.lock", "a+")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert main(["--resolution", "0", "--out", str(out), "--no-progress", "-q"]) == 2
        assert "another build_index is writing" in capsys.readouterr().err
    finally:
        lock.close()
    assert not out.exists()


@pytest.mark.slow
def test_hnsw_quantizer_build_answers_like_the_flat_one(built_r2, tmp_path, encoder):
    """IVFH3_HNSW32: the same lists and codes as IVFH3, the lists to probe found by an HNSW graph
    over the centroids (written, read back and searched through the Geolocator)."""
    import sys

    from geoindex.cli.build import main
    from geoindex import Geolocator, QueryOptions
    from geoindex.encoders.location import encode_latlng

    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import photo_locations

    out = tmp_path / "r2-hnsw"
    assert main(["--resolution", "2", "--out", str(out), "--factory", "IVFH3_HNSW32,SQ8", "--no-progress", "-q"]) == 0
    hnsw, flat = Geolocator(out), Geolocator(built_r2)
    assert hnsw.dir.factory == "IVFH3r0_HNSW32,SQ8" and "quantizer_efSearch=256" in str(hnsw.dir.search)
    xq = encode_latlng(encoder, photo_locations(200, seed=2))
    options = QueryOptions(k=5, search="nprobe=16")
    top = lambda g: np.array([[p.cell for p in r.predictions] for r in g.locate(xq, options)])  # noqa: E731
    assert (top(hnsw) == top(flat)).mean() >= 0.99
