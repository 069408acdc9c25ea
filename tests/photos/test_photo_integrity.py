"""A reference photo gallery is checked as a cell index is (issue 38, items 1 and 4): checksums at
open (small files) and in the server's background (large ones), its structure at open, one line
and exit 2 (or 503) for every damaged file, and a rebuild hint that is a photo build from the
gallery's own manifest, never a cell build."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geoindex.errors import IndexDirError
from geoindex.photos.gallery import PhotoGallery


def overwrite(path, seed: int = 0, size: int = 4096, where: float = 0.5) -> None:
    """Seeded random bytes over ``size`` bytes around ``where`` of the file (same size)."""
    data = bytearray(path.read_bytes())
    start = min(max(0, int(len(data) * where) - size // 2), max(0, len(data) - size))
    block = np.random.default_rng(seed).integers(0, 256, min(size, len(data)), dtype=np.uint8).tobytes()
    data[start:start + len(block)] = block
    path.write_bytes(bytes(data))


def restamp(ref, name: str) -> None:
    """Make the manifest's size of ``name`` match the file again (its SHA-256 left stale): what a
    file too large to hash at open looks like to the structural checks."""
    manifest = json.loads((ref / "manifest.json").read_text())
    manifest["files"][name]["bytes"] = (ref / name).stat().st_size
    (ref / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def ref(photos_ref, index_copy):
    return index_copy(photos_ref, "ref")


@pytest.fixture
def query(encoder, tmp_path):
    from geoindex.encoders.location import encode_latlng

    path = tmp_path / "q.npy"
    np.save(path, encode_latlng(encoder, np.array([[10.0, 20.0], [-30.0, 140.0]])))
    return path


def _locate(capsys, index, ref, query):
    from geoindex.cli.locate import main

    rc = main(["--index", str(index), "--photos", str(ref), "--embedding", str(query), "--format", "json"])
    out, err = capsys.readouterr()
    return rc, out, err.strip()


@pytest.mark.parametrize("name", ["vectors.faiss", "photos.duckdb", "skipped.csv"])
def test_a_same_size_overwrite_in_a_gallery_file_is_refused_by_locate(flat_r2, ref, query, capsys, name):
    """Before: vectors.faiss answered other neighbours with exit 0; photos.duckdb a 23-line traceback."""
    rc, out, err = _locate(capsys, flat_r2, ref, query)
    assert rc == 0 and json.loads(out)[0]["neighbours"]
    overwrite(ref / name)
    rc, out, err = _locate(capsys, flat_r2, ref, query)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{ref / name} fails its SHA-256 check" in err
    assert f"--photos {json.loads((ref / 'manifest.json').read_text())['csv']['path']}" in err
    assert "--resolution" not in err and f"--out {ref} --overwrite" in err


def test_a_damaged_duckdb_too_large_to_hash_is_one_line(ref):
    (ref / "photos.duckdb").write_bytes(bytes((ref / "photos.duckdb").stat().st_size))  # zeroed
    with pytest.raises(IndexDirError, match=r"photos\.duckdb is not a readable DuckDB file .*--photos .*--overwrite"):
        PhotoGallery(ref, verify="small", small_file_bytes=0)


@pytest.mark.parametrize("sql,words", [
    ("UPDATE photos SET lat = 91 WHERE id = 3", "a lat or lng outside"),
    ("DELETE FROM photos WHERE id = 39", "39 photos, the manifest says 40"),
    ("UPDATE photos SET id = 99 WHERE id = 5", "ids are not 0..39"),
])
def test_structural_checks_of_the_photo_table(ref, sql, words):
    import duckdb

    con = duckdb.connect(str(ref / "photos.duckdb"))
    con.execute(sql)
    con.close()
    restamp(ref, "photos.duckdb")
    with pytest.raises(IndexDirError, match="corrupt") as e:
        PhotoGallery(ref, verify="size")
    assert words in str(e.value) and str(ref / "photos.duckdb") in str(e.value)


def test_vectors_of_another_size_are_refused(ref):
    import faiss

    index = faiss.read_index(str(ref / "vectors.faiss"))
    index.remove_ids(faiss.IDSelectorRange(30, 40))
    faiss.write_index(index, str(ref / "vectors.faiss"))
    restamp(ref, "vectors.faiss")
    with pytest.raises(IndexDirError, match=r"vectors\.faiss is corrupt \(ntotal 30, photos\.duckdb holds 40"):
        PhotoGallery(ref, verify="size")


def test_inspect_names_the_kind_and_gives_the_gallery_s_own_rebuild(ref, capsys):
    from geoindex.cli.inspect import main

    assert main([str(ref), "--lookup=10,20", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "reference photo gallery, 40 photos" in out and "checksums ok" in out and out.count("photo ") >= 2
    overwrite(ref / "vectors.faiss", where=0.9)
    assert main([str(ref)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vectors.faiss fails its SHA-256 check" in err
    assert "geoindex build --photos " in err and "--clip-model tiny-test --factory Flat" in err
    assert "--resolution" not in err


def test_inspect_says_a_cell_index_is_one(flat_r2, capsys):
    from geoindex.cli.inspect import main

    assert main([str(flat_r2)]) == 0
    assert "cell index, 2,203 cells" in capsys.readouterr().out


def test_rebuild_hint_without_a_manifest_is_a_photo_build():
    from pathlib import Path

    from geoindex.photos.layout import rebuild_hint

    hint = rebuild_hint(Path("REF"))
    assert "geoindex build --photos CSV --out REF --overwrite" in hint and "cannot tell" in hint


def test_server_checks_large_gallery_files_in_the_background(flat_r2, ref):
    """A file over --checksum-at-start-mb is hashed after the start; a mismatch: 503 everywhere."""
    from fastapi.testclient import TestClient

    from geoindex.serve.app import create_app
    from geoindex.serve.settings import ServeSettings

    overwrite(ref / "vectors.faiss", where=0.9)  # vector bytes: no structural check sees it
    s = ServeSettings(index=str(flat_r2), photos=str(ref), embeddings_only=True, checksum_at_start_mb=0.05)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        c.app.state.engine.integrity.join(60)
        health = c.get("/healthz")
        assert health.status_code == 503 and str(ref / "vectors.faiss") in health.json()["error"]["message"]
        assert c.get("/readyz").status_code == 503
        q = c.post("/v1/locate/embedding", json={"embeddings": [[1.0] + [0.0] * 511]})
        assert q.status_code == 503 and "--photos" in q.json()["error"]["message"]
