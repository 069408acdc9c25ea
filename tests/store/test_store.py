"""The exact store (``build_index --store``): re-ranking from memory-mapped vectors on disk, against
brute force over the exact gallery; the store in the index directory contract; fast-scan codes."""

import json
import shutil

import numpy as np
import pytest

from geoindex.cli.build import main as build_main
from geoindex.store.cell_table import hot_files
from geoindex import Geolocator, QueryOptions
from geoindex.encoders.location import encode_latlng
from geoindex.errors import IndexDirError

NLIST_R0 = 122


def build(out, *extra, index="IVFH3,PQ16x4", search=f"nprobe={NLIST_R0},rerank=100"):
    assert build_main(["--resolution", "2", "--cells", "all", "--out", str(out), "--factory", index,
                       "--search", search, *extra, "--no-progress", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same lossy res-2 index (8-byte PQ16x4 codes) with an fp32, fp16 and sq8 store."""
    root = tmp_path_factory.mktemp("stores")
    return {kind: build(root / kind, "--store", kind) for kind in ("fp32", "fp16", "sq8")}


@pytest.fixture(scope="module")
def queries(encoder, gallery_100k):
    return encode_latlng(encoder, gallery_100k[np.random.default_rng(8).choice(len(gallery_100k), 300, replace=False)])


@pytest.fixture(scope="module")
def exact_gallery(stores, encoder):
    geo = Geolocator(stores["fp32"])
    return geo.table.cell, encode_latlng(encoder, np.column_stack((geo.table.lat, geo.table.lng)))


@pytest.mark.slow
def test_fp32_store_returns_the_exact_order_of_its_candidates(stores, queries, exact_gallery):
    ids, xb = exact_gallery
    geo = Geolocator(stores["fp32"])
    assert geo.store is not None and geo.store.kind == "fp32"
    # the vectors the builder encoded (another batching moves the last bits of a float32)
    assert np.abs(np.asarray(geo.store.data) - xb).max() < 1e-6
    D0, I0 = geo.search(queries, 100, QueryOptions(search="rerank=0"))
    D, I = geo.search(queries, 100, QueryOptions())
    true = np.einsum("qd,qkd->qk", queries, xb[geo.table.rows(I0)])
    order = np.argsort(-true, axis=1, kind="stable")
    assert np.array_equal(I, np.take_along_axis(I0, order, 1))
    assert np.allclose(D, np.take_along_axis(true, order, 1), atol=1e-6)
    # and the encoder re-ranker, which the store replaces, agrees
    De, Ie = Geolocator(stores["fp32"], use_store=False).search(queries, 100, QueryOptions())
    assert np.array_equal(I, Ie) and np.allclose(D, De, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind, atol", [("fp16", 5e-4), ("sq8", 5e-3)])
def test_compact_stores_score_within_their_precision(stores, queries, exact_gallery, kind, atol):
    ids, xb = exact_gallery
    geo = Geolocator(stores[kind])
    D, I = geo.search(queries, 100, QueryOptions())
    true = np.einsum("qd,qkd->qk", queries, xb[geo.table.rows(I)])
    err = np.abs(D - true)
    assert err.max() <= atol, (kind, err.max())
    # the order is the exact one up to ties closer than the precision
    assert np.all(np.diff(true, axis=1) <= 2 * atol)
    # recall@10 as with exact fp32 vectors (8-byte codes at aliasing res 2: R=100 finds ~75%)
    gt = ids[np.argsort(-(queries @ xb.T), axis=1)[:, :10]]
    r10 = {name: np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), gt.tolist())])
           for name, found in (("store", I[:, :10]),
                               ("fp32", Geolocator(stores["fp32"]).search(queries, 10, QueryOptions())[1]),
                               ("codes", geo.search(queries, 10, QueryOptions(search="rerank=0"))[1]))}
    assert r10["store"] >= r10["fp32"] - 0.01 and r10["store"] >= r10["codes"] + 0.3, r10


@pytest.mark.slow
def test_manifest_records_store_and_memory(stores):
    m = json.loads((stores["fp16"] / "manifest.json").read_text())
    assert m["store"] == {"kind": "fp16", "file": "exact.npy", "order": "cell", "bytes_per_vector": 1024}
    assert m["files"]["exact.npy"]["bytes"] == (stores["fp16"] / "exact.npy").stat().st_size
    n = m["gallery"]["count"]
    assert m["memory"]["resident_bytes"] == m["files"]["vectors.faiss"]["bytes"]
    assert m["memory"]["disk_bytes"] >= n * 1024 and m["memory"]["disk_bytes_per_vector"] == pytest.approx(1024, abs=1)
    sq8 = json.loads((stores["sq8"] / "manifest.json").read_text())
    assert set(sq8["files"]) == {"vectors.faiss", "cells.duckdb", "exact.npy", "exact_sq8.npy", *hot_files()}


@pytest.mark.slow
def test_store_auto_follows_rerank(tmp_path):
    plain = build(tmp_path / "plain", index="IVFH3,SQ8", search="nprobe=4")  # no re-ranking: no store
    m = json.loads((plain / "manifest.json").read_text())
    assert m["store"] is None and not (plain / "exact.npy").exists() and m["memory"]["disk_bytes"] == 0
    reranked = build(tmp_path / "rr", search="nprobe=8,rerank=32")
    assert json.loads((reranked / "manifest.json").read_text())["store"]["kind"] == "fp16"
    assert Geolocator(reranked).store.kind == "fp16"


@pytest.mark.slow
def test_missing_or_damaged_store_is_refused_with_the_fix(stores, tmp_path):
    copy = tmp_path / "idx"
    shutil.copytree(stores["fp16"], copy)
    store = copy / "exact.npy"
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(IndexDirError, match=r"exact\.npy is \d+ bytes.*--store fp16 --out .* --overwrite"):
        Geolocator(copy)
    store.unlink()  # missing
    with pytest.raises(IndexDirError, match=r"lacks exact\.npy.*geoindex build --resolution 2 --cells all "
                                            r"--factory IVFH3r0,PQ16x4 .*--store fp16"):
        Geolocator(copy)
    flipped = bytearray(data)
    flipped[-100] ^= 0xFF  # same size, altered: the full check finds it
    store.write_bytes(bytes(flipped))
    Geolocator(copy, verify="size")  # the size check passes
    with pytest.raises(IndexDirError, match="exact.npy fails its SHA-256 check"):
        Geolocator(copy)  # files up to 100 MB are checksummed at open
    # a file of the right size but another shape or kind (the manifest edited by hand)
    store.write_bytes(data)
    m = json.loads((copy / "manifest.json").read_text())
    m["store"]["kind"] = "fp32"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexDirError, match=r"holds float16 \(5882, 512\), the index needs fp32 .*rebuild it with "
                                            r"`geoindex build --resolution 2 .*use_store=False"):
        Geolocator(copy)
    m["store"]["kind"] = "sq8"  # sq8 needs its ranges too
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexDirError, match=r"exact_sq8\.npy"):
        Geolocator(copy)


def test_bad_store_kind_is_refused_before_encoding(tmp_path, capsys):
    assert build_main(["--resolution", "1", "--out", str(tmp_path / "x"), "--store", "fp8", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--store 'fp8' is not one of auto, none, fp16, sq8, fp32" in err and not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["IVFH3,PQ32x4fs", "IVFH3_HNSW32,PQ64x4fs"])
def test_fast_scan_codes_on_h3_lists(tmp_path, factory, queries, exact_gallery):
    """Fast-scan lists are filled as plain 4-bit PQ and converted: the same codes must answer as the
    plain 4-bit PQ index does (fast scan only quantises its lookup tables), and self-hit."""
    ids, xb = exact_gallery
    search = "nprobe=16,quantizer_efSearch=256" if "HNSW" in factory else "nprobe=16"
    geo = Geolocator(build(tmp_path / "fs", index=factory, search=search))
    plain = Geolocator(build(tmp_path / "plain", index=factory.replace("x4fs", "x4"), search=search))
    assert type(geo.index).__name__ == "IndexIVFPQFastScan" and type(plain.index).__name__ == "IndexIVFPQ"
    assert geo.index.code_size == plain.index.code_size and geo.index.ntotal == len(ids)
    _, I = geo.search(xb[:500], 1, QueryOptions())
    assert np.mean(I[:, 0] == ids[:500]) >= 0.8
    _, Ifs = geo.search(queries, 10, QueryOptions())
    _, Ipq = plain.search(queries, 10, QueryOptions())
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(Ifs.tolist(), Ipq.tolist())]) >= 0.85


@pytest.mark.parametrize("kind", ["fp16", "sq8", "fp32"])
def test_store_scores_equal_the_decoded_vectors_dot_the_query(tmp_path, kind):
    """ExactStore.scores (fp16: FAISS's kernel on the raw halves, no float32 copy) gives each row's
    score in the rows' order, as decoding and a dot product do; rows given unsorted and repeated."""
    from geoindex.store.exact_store import open_store, store_files, write_store

    rng = np.random.default_rng(3)
    xb = rng.standard_normal((500, 512)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    ids = np.arange(500, dtype=np.int64) * 7
    write_store(tmp_path, kind, ids, lambda: iter([(ids, xb)]))
    store = open_store(tmp_path, {"kind": kind}, 500)
    assert all((tmp_path / f).is_file() for f in store_files(kind))
    rows = rng.permutation(500)[:300]
    rows[-1] = rows[0]
    q = xb[rows[5]]
    got = store.scores(rows, q)
    want = store.vectors(rows) @ q
    assert got.dtype == np.float32 and got.shape == (300,)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert int(np.argmax(got)) == 5 and got[5] > 0.99
