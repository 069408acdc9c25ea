"""A damaged or unreadable index is refused with one line naming the file and the fix, never a
traceback or a wrong answer (issue 29); the fix is built from the index's own manifest."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import pytest

from geoindex.errors import IndexDirError
from geoindex.locate.geolocator import Geolocator


@pytest.fixture
def copy(built_r2, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(built_r2, dst)
    return dst


def rewrite(path, fn):
    data = np.load(path)
    np.save(path, fn(data.copy()))


@pytest.mark.parametrize("name,damage,words", [
    ("hot/cell.npy", lambda a: a[::-1], "not strictly increasing"),
    # the last id's mode bits 1 -> 2: still sorted, no longer a cell
    ("hot/cell.npy", lambda a: np.where(np.arange(len(a)) == len(a) - 1, a ^ (3 << 59), a), "not an H3 cell at resolution 2"),
    ("hot/lat.npy", lambda a: np.where(np.arange(len(a)) == 7, 91.0, a), "outside [-90, 90]"),
    ("hot/lng.npy", lambda a: np.where(np.arange(len(a)) == 7, np.nan, a), "outside [-180, 180]"),
    # a code past the value list answered IndexError mid-query (issue 38: every file, one line)
    ("hot/place.npy", lambda a: np.where(np.arange(len(a)) == 7, 10**6, a), "a code outside 0.."),
])
def test_structural_checks_without_checksums(copy, name, damage, words):
    """What a file too large to checksum at open would hide: caught by the structure checks."""
    rewrite(copy / name, damage)
    with pytest.raises(IndexDirError, match="corrupt") as e:
        Geolocator(copy, verify="size")
    assert str(copy / name) in str(e.value) and words in str(e.value) and "--resolution 2" in str(e.value)


def test_zeroed_ivf_list_ids_are_caught(copy):
    """Zeroed inverted lists answer `cell: 0` at probability 1.0; the sampled ids catch them."""
    import faiss

    index = faiss.read_index(str(copy / "vectors.faiss"))
    ivf = faiss.extract_index_ivf(index)
    lst = next(i for i in range(ivf.nlist) if ivf.invlists.list_size(i))
    size = ivf.invlists.list_size(lst)
    codes = faiss.rev_swig_ptr(ivf.invlists.get_codes(lst), size * ivf.code_size).copy()
    ivf.invlists.update_entries(lst, 0, size, faiss.swig_ptr(np.zeros(size, dtype=np.int64)), faiss.swig_ptr(codes))
    faiss.write_index(index, str(copy / "vectors.faiss"))
    with pytest.raises(IndexDirError, match=r"inverted list \d+ holds ids that are not in the cell table"):
        Geolocator(copy, verify="size")


def test_zeroed_vectors_faiss_is_one_line_not_a_faiss_traceback(copy):
    size = (copy / "vectors.faiss").stat().st_size
    (copy / "vectors.faiss").write_bytes(bytes(size))
    with pytest.raises(IndexDirError, match=r"vectors\.faiss fails its SHA-256 check.*--resolution 2"):
        Geolocator(copy)  # checksummed at open (a small file)
    with pytest.raises(IndexDirError, match=r"vectors\.faiss is not a readable FAISS index \(FAISS says: .*not "
                                            r"recognized\): rebuild it with `geoindex build --resolution 2"):
        Geolocator(copy, verify="size")  # a large file's path: FAISS's RuntimeError, in one line


def test_unreadable_files_say_permission_denied(copy, monkeypatch):
    """(Tests may run as root, where chmod 000 does not stop reading: the error is injected.)"""
    import geoindex.store.manifest as manifest_module
    import geoindex.store.vectors as vectors_module  # where an index directory's vectors.faiss is opened

    def denied(path, *a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(vectors_module, "open", denied, raising=False)
    with pytest.raises(IndexDirError, match=r"vectors\.faiss cannot be read \(permission denied\): .*chmod"):
        Geolocator(copy, verify="size")
    monkeypatch.undo()
    monkeypatch.setattr(manifest_module, "sha256_file", denied)
    with pytest.raises(IndexDirError, match=r"cannot be read \(permission denied\)"):
        Geolocator(copy)


def test_inspect_reports_an_unreadable_file_in_one_line(copy, monkeypatch, capsys):
    import geoindex.store.manifest as manifest_module
    from geoindex.cli.inspect import main

    def denied(path, *a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(manifest_module, "sha256_file", denied)
    assert main([str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("geoindex inspect: error:") and "permission denied" in err


def test_rebuild_hint_comes_from_the_manifest_or_says_it_cannot_know(copy):
    (copy / "hot" / "lat.npy").write_bytes(b"\0" * (copy / "hot" / "lat.npy").stat().st_size)
    with pytest.raises(IndexDirError) as e:
        Geolocator(copy)
    assert "geoindex build --resolution 2 --cells land --factory IVFH3" in str(e.value)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(IndexDirError) as e:
        Geolocator(copy)
    message = str(e.value)
    assert "--resolution 5" not in message  # the old hint: wrong for this res-2 index
    assert f"geoindex build --resolution R --out {copy} --overwrite" in message and "cannot tell" in message


def test_regional_manifest_rebuild_hint_keeps_the_region(copy):
    from geoindex.store.manifest import rebuild_hint

    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["gallery"]["region"] = {"countries": ["FR", "ES"], "bboxes": [[-5.0, 41.0, 10.0, 51.0]], "cells": []}
    hint = rebuild_hint(copy, manifest)
    assert "--country FR --country ES --bbox=-5,41,10,51" in hint


def test_locate_on_a_folder_says_it_is_a_folder(built_r2, tmp_path, capsys):
    from geoindex.cli.locate import main

    assert main([str(built_r2), "--index", str(built_r2)]) == 2
    err = capsys.readouterr().err
    assert "is an index folder, not an image: give it with --index" in err and "does not exist" not in err
    photos = tmp_path / "photos"
    photos.mkdir()
    assert main([str(photos), "--index", str(built_r2)]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not an image" in err and "--out" in err and "does not exist" not in err


def test_train_fit_on_an_unwritable_out_is_one_line(tmp_path, monkeypatch, capsys):
    import geoindex.train.fit as fit_module
    from geoindex.cli.train import main

    def unwritable(config):
        raise PermissionError(errno.EACCES, "Permission denied", str(config.out / "checkpoints"))

    monkeypatch.setattr(fit_module, "fit", unwritable)
    assert main(["fit", "--features", str(tmp_path), "--out", "/nowhere/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "cannot write '/nowhere/run/checkpoints' (Permission denied)" in err and "permissions" in err
