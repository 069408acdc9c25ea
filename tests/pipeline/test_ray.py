"""The build on a local Ray cluster: the same index as one process, bit for bit; a killed worker
retried, a killed driver resumed; lists on disk answering like lists in memory."""

import hashlib
import shutil

import duckdb
import h3
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from geoindex.cli.build import main  # noqa: E402
from geoindex.pipeline import distributed, work_dir_for  # noqa: E402
from geoindex.store.manifest import open_index_dir  # noqa: E402
from tests.helpers.build import stop_at_shard_write  # noqa: E402


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(out):
    con = duckdb.connect(str(out / "cells.duckdb"), read_only=True)
    try:
        return con.execute("SELECT * FROM cells ORDER BY cell").fetchall()
    finally:
        con.close()


R2 = ["--resolution", "2", "--factory", "IVFH3,SQ8", "--no-progress", "-q"]
R3 = ["--resolution", "3", "--no-progress", "-q"]  # the default: IVF,SQ8 on k-means lists


@pytest.fixture(scope="module")
def one_process(built_r2):
    """The reference build of R2, in this process without Ray: the shared res-2 index (built with
    the same settings through BuildConfig, tests/conftest.py)."""
    return {"r2": built_r2}


@pytest.fixture(scope="module")
def one_process_r3disk(tmp_path_factory):
    """The reference res-3 build with its lists on disk, in this process without Ray."""
    out = tmp_path_factory.mktemp("one") / "r3disk"
    assert main([*R3, "--lists-on-disk", "--out", str(out)]) == 0
    return out


@pytest.mark.ray
def test_ray_build_is_the_one_process_build(cluster, one_process, tmp_path):
    out = tmp_path / "ray"
    assert main([*R2, "--ray", "--out", str(out)]) == 0
    assert sha(out / "vectors.faiss") == sha(one_process["r2"] / "vectors.faiss")
    assert rows(out) == rows(one_process["r2"])
    index = open_index_dir(out, verify="full").manifest["index"]
    assert (index["built_with"], index["lists"]) == ("ray", "memory")


@pytest.mark.ray
def test_killed_worker_is_retried(cluster, one_process, tmp_path):
    paris_root = h3.latlng_to_cell(48.85, 2.35, 0)  # a res-2 build's shards are res-0 cells
    (cluster / f"{paris_root}.kill").touch()
    out = tmp_path / "ray"
    assert main([*R2, "--ray", "--out", str(out)]) == 0
    assert (cluster / f"{paris_root}.killed").exists()  # the actor holding that shard did die
    assert sha(out / "vectors.faiss") == sha(one_process["r2"] / "vectors.faiss")
    assert rows(out) == rows(one_process["r2"])


@pytest.mark.ray
def test_killed_driver_resumes_on_ray(cluster, one_process, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ray"
    stop_at_shard_write(monkeypatch, 30)  # the driver stops mid-encode
    assert main([*R2, "--ray", "--out", str(out)]) == 130
    assert not out.exists()
    assert len(list((work_dir_for(out) / "shards").glob("*.npz"))) == 29
    monkeypatch.undo()
    capsys.readouterr()

    assert main([*R2, "--ray", "--out", str(out)]) == 0
    assert sha(out / "vectors.faiss") == sha(one_process["r2"] / "vectors.faiss")
    assert rows(out) == rows(one_process["r2"])


@pytest.mark.ray
def test_ray_on_disk_lists_resume_from_filled_parts(cluster, one_process_r3disk, tmp_path, monkeypatch, caplog):
    out = tmp_path / "disk"
    monkeypatch.setattr(distributed, "PART_VECTORS", 4_000)  # several parts at res 3
    real_merge = distributed.merge_parts

    def dying_merge(*args):
        raise KeyboardInterrupt  # every part filled, the merge not done

    monkeypatch.setattr(distributed, "merge_parts", dying_merge)
    (cluster / "part00001.kill").touch()  # and the worker filling part 1 dies: Ray retries the task
    assert main([*R3, "--lists-on-disk", "--ray", "--out", str(out)]) == 130
    assert (cluster / "part00001.killed").exists()
    parts = sorted((work_dir_for(out) / "parts").glob("*.faiss"))
    assert len(parts) >= 3  # 13,483 vectors in parts of >= 4,000
    monkeypatch.setattr(distributed, "merge_parts", real_merge)
    real_fill, refilled = distributed.fill_parts, []

    def counting_fill(trained, loaders, workers):
        refilled.append(len(loaders))
        yield from real_fill(trained, loaders, workers)

    monkeypatch.setattr(distributed, "fill_parts", counting_fill)
    with caplog.at_level("INFO", logger="geoindex.pipeline.pipeline"):
        assert main([*R3, "--lists-on-disk", "--ray", "--out", str(out)]) == 0
    assert f"the trained index and {len(parts)} filled parts" in caplog.text
    assert refilled == [0]  # every part came from the killed run
    assert not work_dir_for(out).exists()
    for name in ("vectors.faiss", "lists.ivfdata"):
        assert sha(out / name) == sha(one_process_r3disk / name), name
    assert rows(out) == rows(one_process_r3disk)


@pytest.mark.slow
def test_on_disk_lists_answer_like_lists_in_memory(one_process_r3disk, tmp_path, encoder):
    from geoindex import Geolocator, QueryOptions
    from geoindex.encoders.location import encode_latlng

    memory = tmp_path / "memory"
    assert main([*R3, "--out", str(memory)]) == 0
    moved = tmp_path / "moved"
    shutil.copytree(one_process_r3disk, moved)  # the lists file is found beside vectors.faiss
    disk, mem = Geolocator(moved), Geolocator(memory)
    m = disk.dir.manifest
    assert m["index"]["lists"] == "disk" and "lists.ivfdata" in m["files"]
    assert m["memory"]["lists_disk_bytes"] == (moved / "lists.ivfdata").stat().st_size
    assert m["memory"]["resident_bytes"] < m["memory"]["lists_disk_bytes"] / 5
    q = encode_latlng(encoder, np.random.default_rng(7).uniform([-50, -170], [70, 170], (40, 2)))
    for a, b in zip(disk.locate(q, QueryOptions(k=10)), mem.locate(q, QueryOptions(k=10)), strict=True):
        assert a.to_dict() == b.to_dict()


@pytest.mark.slow
def test_lists_on_disk_needs_lists(tmp_path, capsys):
    assert main(["--resolution", "1", "--lists-on-disk", "--out", str(tmp_path / "x"), "-q", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--lists-on-disk needs an IVF index" in err and "IVFH3,PQ32" in err
    assert not (tmp_path / "x").exists()  # no index published; the encoded shards stay for a fixed rerun


def test_actor_plan_follows_the_cluster():
    assert distributed.actor_plan({"CPU": 2.0}, "auto") == (2, "cpu")
    assert distributed.actor_plan({"CPU": 16.0, "GPU": 2.0}, "auto") == (2, "cuda")
    assert distributed.actor_plan({"CPU": 16.0, "GPU": 2.0}, "cpu") == (16, "cpu")
    with pytest.raises(Exception, match="has no GPU"):
        distributed.actor_plan({"CPU": 2.0}, "cuda")


def test_part_runs_keep_shard_order_and_skip_empty_shards():
    assert distributed.part_runs([3, 0, 4, 5, 0, 1], size=7) == [[0, 2], [3, 5]]
    assert distributed.part_runs([0, 0]) == []


@pytest.mark.ray
def test_ray_build_encodes_with_the_drivers_weights(cluster, tmp_path):
    """--weights on Ray: the actors get the driver's location weights (not the folder) and build
    the same bytes as one process with them, and another index than the released weights'."""
    import torch

    from geoindex.encoders.weights import geoclip_files

    released = geoclip_files()
    weights = tmp_path / "weights"
    weights.mkdir()
    for src in (released.image_head, released.logit_scale):
        shutil.copy(src, weights / src.name)
    state = torch.load(released.location_encoder, weights_only=True)
    state["LocEnc2.head.0.bias"] = state["LocEnc2.head.0.bias"] + 0.05  # another model
    torch.save(state, weights / released.location_encoder.name)
    r1 = ["--resolution", "1", "--factory", "Flat", "--no-progress", "-q", "--weights", str(weights)]
    assert main([*r1, "--out", str(tmp_path / "one")]) == 0
    assert main([*r1, "--ray", "--out", str(tmp_path / "ray")]) == 0
    assert main([*r1[:-2], "--out", str(tmp_path / "released")]) == 0
    assert sha(tmp_path / "ray" / "vectors.faiss") == sha(tmp_path / "one" / "vectors.faiss")
    assert sha(tmp_path / "ray" / "vectors.faiss") != sha(tmp_path / "released" / "vectors.faiss")
    encoder = open_index_dir(tmp_path / "ray").manifest["encoder"]
    assert encoder["weights_sha256"] == sha(weights / released.location_encoder.name)
