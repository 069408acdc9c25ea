"""One set of index decisions for both gallery kinds (geoindex/index/disk.py, training.py): a cell
index and a photo gallery built side by side must follow the same rules, so a decision changed in
one build's own copy, or a copy brought back, fails here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geoindex.errors import InvalidArgumentError
from geoindex.index import disk, training


def test_training_size_rule():
    assert training.train_size(10_000, None) == 10_000  # every vector below TRAIN_MIN
    assert training.train_size(10**7, None) == 65_536  # IVFH3 lists or a codec alone: TRAIN_MIN
    assert training.train_size(10**7, 4096) == 262_144  # 64 a k-means list
    assert training.train_size(10**8, 8192) == 300_000  # the cell build's cap
    assert training.train_size(10**8, 8192, cap=None) == 524_288  # photo galleries: uncapped


def test_photo_and_cell_builds_use_the_shared_rules():
    import faiss

    from geoindex.photos import photo_index, stream
    from geoindex.photos.photo_index import nlist_for

    for n in (300, 70_000, 10**7, 5 * 10**7):
        assert stream.train_size(n) == training.train_size(n, nlist_for(n), cap=None)
    ivf = faiss.index_factory(512, "IVF4,SQ8", faiss.METRIC_INNER_PRODUCT)
    fast = faiss.index_factory(512, "IVF4,PQ16x4fs", faiss.METRIC_INNER_PRODUCT)
    assert disk.lists_mappable(ivf) and not disk.lists_mappable(fast)
    with pytest.raises(InvalidArgumentError, match="--lists-on-disk needs an IVF index.*IVF1024,PQ32"):
        photo_index.lists_on_disk(True, fast, 100)
    assert photo_index.lists_on_disk(None, ivf, 100) is False and photo_index.lists_on_disk(False, ivf, 10**12) is False


@pytest.fixture
def small_memory(monkeypatch):
    """A machine whose memory every gallery's lists exceed half of: the auto rule sends them to disk."""
    monkeypatch.setattr(disk, "memory_bytes", lambda: 1024)


@pytest.mark.slow
def test_both_kinds_send_lists_to_disk_by_one_rule(tmp_path, small_memory):
    """Lists on disk not asked for: a res-0 IVF cell index and a 40-photo IVF gallery both go to disk
    on a machine too small for their lists (the shared rule), train on the shared sample size and
    answer their own vectors."""
    from geoindex.cli.build import main as build_main
    from geoindex.photos.build import PhotoBuildConfig, build_photos
    from geoindex.photos.gallery import PhotoGallery
    from geoindex.train.synthetic import write_photos

    cells = tmp_path / "cells"
    assert build_main(["--resolution", "0", "--cells", "all", "--factory", "IVF4,SQ8", "--out", str(cells),
                       "--no-progress", "-q"]) == 0
    m = json.loads((cells / "manifest.json").read_text())
    assert m["index"]["lists"] == "disk" and (cells / "lists.ivfdata").is_file()
    assert m["index"]["train_size"] == training.train_size(122, 4) == 122
    assert m["self_check"]["self_hit_at_1"] == 1.0

    csv = write_photos(tmp_path / "p", 40, seed=0, size=16)
    ref = build_photos(PhotoBuildConfig(csv=csv, out=tmp_path / "ref", clip_model="tiny-test", factory="IVF4,SQ8",
                                        device="cpu", progress=False))
    assert ref["index"]["lists"] == "disk" and (tmp_path / "ref" / "lists.ivfdata").is_file()
    assert ref["index"]["train_size"] == training.train_size(40, 4, cap=None) == 40
    gallery = PhotoGallery(tmp_path / "ref")  # its lists mapped from disk
    xq = np.random.default_rng(0).standard_normal((3, 512)).astype("float32")
    D, I = gallery.search(xq / np.linalg.norm(xq, axis=1, keepdims=True), 5)
    assert gallery.index.ntotal == 40 and ((I >= 0) & (I < 40)).all()


def test_refusals_of_lists_on_disk_name_each_kinds_example(tmp_path, capsys):
    from geoindex.cli.build import main as build_main

    csv = tmp_path / "photos.csv"
    csv.write_text("image,lat,lng\n" + "".join(f"{i}.png,{i}.5,{i}.25\n" for i in range(10)))
    for source, example in ((["--resolution", "0"], "IVFH3,PQ32"), (["--photos", str(csv)], "IVF1024,PQ32")):
        assert build_main([*source, "--factory", "Flat", "--lists-on-disk", "--out", str(tmp_path / "x"), "-q"]) == 2
        err = capsys.readouterr().err
        assert "--lists-on-disk needs an IVF index" in err and f"--factory {example}" in err, err
        assert not (tmp_path / "x").exists()


def test_a_photo_build_takes_the_work_dir_lock(tmp_path, capsys):
    """One builder per REF, with the cell build's lock (pipeline/workdir.py): a second is refused."""
    from geoindex.cli.build import main as build_main
    from geoindex.pipeline.workdir import WorkLock, work_dir_for

    csv = tmp_path / "photos.csv"
    csv.write_text("image,lat,lng\n" + "".join(f"{i}.png,{i}.5,{i}.25\n" for i in range(10)))
    out = tmp_path / "ref"
    lock = WorkLock(work_dir_for(out), out)  # the one work dir of every gallery kind
    try:
        assert build_main(["--photos", str(csv), "--out", str(out), "--clip-model", "tiny-test", "-q"]) == 2
        assert f"another build_index is writing {out}" in capsys.readouterr().err
    finally:
        lock.release()
    assert not out.exists() and not (tmp_path / ".ref.partial.lock").exists()
