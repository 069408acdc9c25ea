"""The build plan: argument-only refusals before any work, fingerprints from the normalised plan
(resumes across spellings and front doors), a full disk and a kill while publishing."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from geoindex.pipeline import BuildConfig, build, make_plan, work_dir_for
from geoindex.cli.build import main
from tests.helpers.build import stop_at_shard_write


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(index_dir: Path) -> list:
    con = duckdb.connect(str(index_dir / "cells.duckdb"), read_only=True)
    try:
        return con.execute("SELECT * FROM cells ORDER BY cell").fetchall()
    finally:
        con.close()


@pytest.fixture
def no_encoding(monkeypatch):
    """Fail the test if anything is enumerated or encoded."""
    import geoindex.pipeline.pipeline as pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("the gallery was encoded before the refusal")

    monkeypatch.setattr(pipeline, "encode_shards", refuse)


def test_resolution_spellings_and_batch_size_share_one_fingerprint(tmp_path):
    prints = [make_plan(BuildConfig(out=tmp_path / "x", resolution=r, batch_size=b)).fingerprint()
              for r, b in ((3, 8192), ("3", 8192), ("03", 1000), (" 3", 77))]
    assert all(p == prints[0] for p in prints)
    assert prints[0]["gallery"]["resolution"] == 3 and "batch_size" not in prints[0]
    other = make_plan(BuildConfig(out=tmp_path / "x", resolution=4)).fingerprint()
    assert other != prints[0]


def test_plan_is_frozen_and_normalised(tmp_path):
    from dataclasses import FrozenInstanceError

    plan = make_plan(BuildConfig(out=tmp_path / "x", resolution="02", factory=" IVFH3 , SQ8 ", search="nprobe=4"))
    assert plan.resolution == 2 and plan.factory == "IVFH3,SQ8" and str(plan.search) == "nprobe=4"
    assert plan.index_known and len(plan.weights_sha256) == 64 and plan.out.is_absolute()
    with pytest.raises(FrozenInstanceError):
        plan.resolution = 3


REFUSALS = [
    (["--resolution", "2", "--lists-on-disk"], "--lists-on-disk needs an IVF index"),  # auto at res 2: Flat
    (["--resolution", "2", "--factory", "Flat", "--lists-on-disk"], "--lists-on-disk needs an IVF index"),
    (["--resolution", "2", "--factory", "HNSW32", "--lists-on-disk"], "--lists-on-disk needs an IVF index"),
    (["--resolution", "3", "--factory", "IVFH3,PQ32x4fs", "--lists-on-disk"], "fast-scan"),
    (["--resolution", "2", "--factory", "IVF,PQ16,RFlat", "--lists-on-disk"], "--lists-on-disk needs an IVF index"),
    (["--resolution", "1", "--factory", "IVF99,Nope"], "bad index factory string"),
    (["--resolution", "3", "--factory", "IVFH3r5,SQ8"], "coarser than the gallery's"),
    (["--resolution", "1", "--factory", "IVF,SQ8", "--search", "bogus=3"], "search parameters"),
    (["--resolution", "abc"], "not an integer"),
    (["--resolution", "-3"], "out of range"),
    (["--resolution", "10"], "distributed"),
    (["--resolution", "2", "--cells", "sea"], "is not land, all or an H3 cell id"),
    (["--resolution", "2", "--cells", "land", "--cells", "all"], "contradict"),
    (["--resolution", "1", "--cells", "831fb4fffffffff"], "finer than the gallery's"),
    (["--resolution", "2", "--country", "QQ"], "has no land in the admin-0 boundaries"),
    (["--resolution", "2", "--country", "FR", "--search", "nprobe=4"], "give --factory too"),
    (["--resolution", "2", "--bbox", "1,2,3"], "bbox"),
    (["--resolution", "2", "--store", "fp8"], "--store 'fp8' is not one of"),
    (["--resolution", "2", "--max-memory", "lots"], "max-memory"),
    (["--resolution", "2", "--max-memory", "30MB", "--factory", "IVF,SQ8"], "drop --factory"),
    (["--resolution", "2", "--batch-size", "0"], "positive"),
    (["--resolution", "2", "--precision", "fp64"], "is not one of"),
    (["--resolution", "2", "--precision", "fp16", "--device", "cpu"], "needs a CUDA device"),
    (["--resolution", "2", "--weights", "/no/such/weights"], "is not a folder"),
]


@pytest.mark.parametrize("args,match", REFUSALS, ids=[" ".join(a) for a, _ in REFUSALS])
def test_argument_refusals_come_before_any_work(tmp_path, capsys, no_encoding, args, match):
    if "--country" in args:  # the country check reads the GeoNames table once per process (seconds)
        from geoindex.cells.geocode import places

        places()
    out = tmp_path / "out"
    start = time.perf_counter()
    assert main([*args, "--out", str(out), "--no-progress", "-q"]) == 2
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []  # no work dir, no lock, no index
    assert seconds < 10, f"{seconds:.1f} s to refuse"


@pytest.mark.parametrize("extra,match", [
    (["--country", "FR"], "CSV gallery holds its own rows"),
    (["--factory", "IVFH3,SQ8"], "not an H3 gallery"),
    (["--max-memory", "30MB"], "for a CSV gallery give --factory"),
])
def test_csv_gallery_refusals_come_before_any_work(tmp_path, capsys, no_encoding, extra, match):
    csv = tmp_path / "g.csv"
    csv.write_text("lat,lng\n1,2\n3,4\n")
    assert main(["--gallery-csv", str(csv), *extra, "--out", str(tmp_path / "o"), "--no-progress", "-q"]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == ["g.csv"]


def test_ray_without_ray_is_refused_before_any_work(tmp_path, capsys, no_encoding, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    assert main(["--resolution", "2", "--ray", "--out", str(tmp_path / "o"), "--no-progress", "-q"]) == 2
    assert "pip install 'ray" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_lists_on_disk_refusal_through_the_command_is_quick(tmp_path):
    """The issue's case: `geoindex build --resolution 2 --lists-on-disk` encoded the gallery first (27 s)."""
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "geoindex", "build", "--resolution", "2", "--lists-on-disk",
                          "--out", str(tmp_path / "o"), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "--lists-on-disk needs an IVF index" in res.stderr
    assert "encode" not in res.stderr and os.listdir(tmp_path) == []
    # interpreter start and imports included (65 s on a 2-core machine at load 19, where the old
    # order took 377 s and left its work dir); the refusal itself is timed in-process above
    assert time.perf_counter() - start < 120


@pytest.mark.slow
def test_library_and_cli_resume_each_other(tmp_path, monkeypatch, caplog):
    """Stopped mid-encode from the command (``--resolution 2``), resumed from the library
    (``resolution="02"``, another batch size), and the reverse: both resume every finished
    shard and give the clean build's bytes."""
    clean = build(BuildConfig(out=tmp_path / "clean", resolution=2, factory="IVFH3,SQ8", progress=False))
    args = ["--factory", "IVFH3,SQ8", "--no-progress", "-q"]

    out = tmp_path / "a"
    stop_at_shard_write(monkeypatch, 30)
    assert main(["--resolution", "2", *args, "--out", str(out)]) == 130
    monkeypatch.undo()
    with caplog.at_level("INFO", logger="geoindex.pipeline"):
        build(BuildConfig(out=out, resolution="02", factory="IVFH3,SQ8", batch_size=512, progress=False))
    assert "resuming: 29 finished shards" in caplog.text
    caplog.clear()

    back = tmp_path / "b"
    stop_at_shard_write(monkeypatch, 20)
    with pytest.raises(KeyboardInterrupt):
        build(BuildConfig(out=back, resolution=2, factory="IVFH3,SQ8", progress=False))
    monkeypatch.undo()
    with caplog.at_level("INFO", logger="geoindex.pipeline"):
        assert main(["--resolution", "2", *args, "--batch-size", "100", "--out", str(back)]) == 0
    assert "resuming: 19 finished shards" in caplog.text
    for built in (out, back):
        assert sha(built / "vectors.faiss") == sha(clean.path / "vectors.faiss")
        assert rows(built) == rows(clean.path)
        assert not work_dir_for(built).exists()


@pytest.mark.slow
def test_killed_res3_build_resumes_as_03_to_the_same_bytes(tmp_path, monkeypatch, caplog):
    """The issue's case: a res-3 IVF build stopped mid-encode as `--resolution 3`, rerun as
    `--resolution 03`: the finished shards are kept and the index is the clean build's, byte for byte."""
    clean = build(BuildConfig(out=tmp_path / "clean", resolution=3, progress=False))
    out = tmp_path / "r3"
    stop_at_shard_write(monkeypatch, 60)
    assert main(["--resolution", "3", "--out", str(out), "--no-progress", "-q"]) == 130
    monkeypatch.undo()
    with caplog.at_level("INFO", logger="geoindex.pipeline"):
        assert main(["--resolution", "03", "--out", str(out), "--no-progress", "-q"]) == 0
    assert "resuming: 59 finished shards" in caplog.text
    assert sha(out / "vectors.faiss") == sha(clean.path / "vectors.faiss")
    assert rows(out) == rows(clean.path)


def test_csv_with_trailing_blank_lines_builds(tmp_path, capsys):
    rng = np.random.default_rng(3)
    pts = np.column_stack((rng.uniform(-60, 60, 50), rng.uniform(-180, 180, 50)))
    csv = tmp_path / "g.csv"
    csv.write_text("lat,lng\n" + "".join(f"{a},{b}\n" for a, b in pts) + "\n\n  \n")
    assert main(["--gallery-csv", str(csv), "--out", str(tmp_path / "o"), "--no-progress", "-q"]) == 0
    assert len(rows(tmp_path / "o")) == 50
    inner = tmp_path / "inner.csv"
    inner.write_text("lat,lng\n1,2\n\n3,4\n")
    assert main(["--gallery-csv", str(inner), "--out", str(tmp_path / "p"), "--no-progress", "-q"]) == 2
    assert "line 3" in capsys.readouterr().err


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.slow  # over ~4 s: the full suite (make test-all) runs it
def test_disk_full_while_spilling_shards_is_one_line_and_leaves_no_half_file(tmp_path, capsys, monkeypatch):
    import geoindex.store.shards as shards

    real_savez, calls = np.savez, {"n": 0}

    def filling_savez(f, **arrays):
        calls["n"] += 1
        if calls["n"] == 5:
            f.write(b"PK\x03\x04 half a shard")
            _disk_full()
        real_savez(f, **arrays)

    monkeypatch.setattr(shards.np, "savez", filling_savez)
    out = tmp_path / "o"
    assert main(["--resolution", "1", "--out", str(out), "--no-progress", "-q"]) == 2
    err = capsys.readouterr().err
    assert "disk is full" in err and ".npz" in err and "free space" in err and err.count("\n") == 1, err
    assert "Traceback" not in err
    spilled = sorted(p.name for p in (work_dir_for(out) / "shards").iterdir())
    assert len(spilled) == 4 and all(name.endswith(".npz") for name in spilled)  # whole shards only
    monkeypatch.undo()
    assert main(["--resolution", "1", "--out", str(out), "--no-progress", "-q"]) == 0  # resumes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_disk_full_while_writing_the_index_leaves_no_half_file(tmp_path, capsys, monkeypatch):
    import geoindex.pipeline.write as write

    def half_written(index, path):
        Path(path).write_bytes(b"IxF2 half an index")
        raise RuntimeError(f"Error in faiss::FileIOWriter write error in {path}: 10 != 100 (No space left on device)")

    monkeypatch.setattr(write.faiss, "write_index", half_written)
    out = tmp_path / "o"
    assert main(["--resolution", "0", "--out", str(out), "--no-progress", "-q"]) == 2
    err = capsys.readouterr().err
    assert "disk is full" in err and "vectors.faiss" in err and "free space" in err and err.count("\n") == 1
    assert not out.exists() and not (work_dir_for(out) / "staging").exists()
    assert not list(tmp_path.rglob("vectors.faiss"))


@pytest.mark.slow  # over ~4 s: the full suite (make test-all) runs it
def test_killed_while_publishing_leaves_nothing_behind(tmp_path, monkeypatch):
    import geoindex.pipeline.pipeline as pipeline
    import geoindex.pipeline.workdir as workdir

    out = tmp_path / "o"

    def killed_after(*args, **kwargs):  # the process dies right after the rename that published
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "BuildResult", killed_after)
    assert main(["--resolution", "0", "--out", str(out), "--no-progress", "-q"]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no work dir, no lock
    assert (out / "manifest.json").is_file() and not (out / "shards").exists()
    monkeypatch.undo()

    real = workdir.WorkLock.hand_over

    def killed_during(self):  # dies after the work dir became the index, before the rename
        real(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(workdir.WorkLock, "hand_over", killed_during)
    again = tmp_path / "p"
    assert main(["--resolution", "0", "--out", str(again), "--no-progress", "-q"]) == 130
    assert not again.exists() and not (tmp_path / ".p.partial.lock").exists()
    monkeypatch.undo()
    assert main(["--resolution", "0", "--out", str(again), "--no-progress", "-q"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "p"]
    assert sha(again / "vectors.faiss") == sha(out / "vectors.faiss")
