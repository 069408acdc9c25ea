"""The build driver holds nothing per cell: the hot columns and the exact store stream from the shards
(in id order, checked), the gallery's parents are reduced shard by shard, and the manifest records
the driver's peak anonymous and file-backed memory per stage (issue 29, item 4)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from geoindex.pipeline.memory import StageMemory, read_rss
from geoindex.pipeline.shard_cells import ShardCells
from geoindex.cells.h3ids import cell_to_parent
from geoindex.errors import IndexDirError
from geoindex.store.cell_table import HOT, STRING_COLUMNS, _read_duckdb, load_cell_table
from geoindex.store.hot_writer import ShardRows, write_hot_columns_streaming
from geoindex.store.shards import shard_files

LINUX = sys.platform.startswith("linux")


def _shards(tmp_path: Path, parts: list[dict]) -> list:
    shards = shard_files(tmp_path / "shards", [f"s{i}" for i in range(len(parts))])
    for shard, meta in zip(shards, parts):
        shard.write(np.zeros((len(meta["cell"]), 512), np.float16), meta)
    return shards


def _meta(cells, country, place):
    n = len(cells)
    return {"cell": np.array(cells, np.int64), "lat": np.linspace(-10, 10, n), "lng": np.linspace(5, 6, n),
            "country": np.array(country, dtype=str).reshape(n), "admin1": np.array([""] * n, dtype=str).reshape(n),
            "place": np.array(place, dtype=str).reshape(n)}


@pytest.mark.parametrize("name", ["built_r2", "fr_r2"])
def test_streamed_hot_columns_equal_the_duckdb_read_back(name, request):
    """Same arrays (dtypes and values) and the same distinct strings as reading ``cells`` back from
    DuckDB with ORDER BY and dictionary codes, which is what the build wrote before."""
    index = request.getfixturevalue(name)
    streamed, sql = load_cell_table(index / "cells.duckdb"), _read_duckdb(index / "cells.duckdb")
    for col in ("cell", "lat", "lng"):
        a, b = getattr(streamed, col), getattr(sql, col)
        assert a.dtype == b.dtype and np.array_equal(a, b), col
    for col in STRING_COLUMNS:
        assert streamed.codes[col].dtype == sql.codes[col].dtype == np.int32
        assert np.array_equal(streamed.codes[col], sql.codes[col]), col
        assert list(streamed.values[col]) == list(sql.values[col]), col
    assert np.count_nonzero(streamed.codes["place"]) > 0.9 * len(streamed)


def test_hot_writer_codes_nulls_and_code_point_order(tmp_path):
    """'' is NULL (code 0); codes rank values in code-point order across shards ('Z' < 'a' < 'É')."""
    parts = [_meta([1, 5], ["FR", ""], ["a", "É"]), _meta([], [], []), _meta([9, 12], ["DE", "FR"], ["Z", "a"])]
    shards = _shards(tmp_path, parts)
    cells = ShardCells(shards)
    names = write_hot_columns_streaming(tmp_path, lambda: (s.read() for s in shards), cells.rows)
    assert set(names) == {f"{HOT}/{c}.npy" for c in ("cell", "lat", "lng", *STRING_COLUMNS)} | {f"{HOT}/values.json"}
    values = json.loads((tmp_path / HOT / "values.json").read_text())
    assert values == {"country": [None, "DE", "FR"], "admin1": [None], "place": [None, "Z", "a", "É"]}
    assert np.load(tmp_path / HOT / "country.npy").tolist() == [2, 0, 1, 2]
    assert np.load(tmp_path / HOT / "place.npy").tolist() == [2, 3, 1, 2]
    assert np.load(tmp_path / HOT / "cell.npy").tolist() == [1, 5, 9, 12]
    assert np.load(tmp_path / HOT / "admin1.npy").tolist() == [0, 0, 0, 0]


def test_shard_rows_refuse_shards_out_of_id_order(tmp_path):
    with pytest.raises(IndexDirError, match="increasing order"):
        ShardRows([2, 2], [(10, 20), (15, 30)])
    shards = _shards(tmp_path, [_meta([3, 2], ["", ""], ["", ""])])
    with pytest.raises(IndexDirError, match="not sorted"):
        ShardCells(shards)
    assert ShardRows([2, 0, 3], [(1, 2), (5, 9)]).offsets.tolist() == [0, 2, 2]


def test_shard_cells_parents_and_rows_match_the_concatenation(built_r2, tmp_path):
    """What the index stage reduces shard by shard equals what it used to compute on all ids."""
    ids = np.load(built_r2 / HOT / "cell.npy")
    cut = [0, 100, 100, 1500, len(ids)]  # an empty shard too
    n = len(ids)
    shards = _shards(tmp_path, [_meta(ids[a:b], [""] * (b - a), [""] * (b - a)) for a, b in zip(cut, cut[1:])])
    cells = ShardCells(shards)
    assert len(cells) == n and cells.counts == [100, 0, 1400, n - 1500]
    for res in (0, 1):
        parents, sizes = cells.parents(res)
        want, want_sizes = np.unique(cell_to_parent(ids, res), return_counts=True)
        assert np.array_equal(parents, want) and np.array_equal(sizes, want_sizes)
    rows = np.sort(np.random.default_rng(0).choice(n, 50, replace=False))
    assert np.array_equal(cells.at(rows), ids[rows])


def test_manifest_records_the_driver_memory_per_stage(built_r2):
    memory = json.loads((built_r2 / "manifest.json").read_text())["peak_memory"]
    if not LINUX:
        assert memory == {}
        return
    stages = memory["stages"]
    for stage in ("encode", "train", "add", "hot_columns", "self_check", "write_index", "metadata_db", "manifest"):
        assert stages[stage]["anon_mib"] > 0 and stages[stage]["file_mib"] > 0, stage
    assert memory["driver_anon_mib"] == max(s["anon_mib"] for s in stages.values())


@pytest.mark.skipif(not LINUX, reason="/proc/self/status is Linux's")
def test_stage_memory_charges_an_allocation_to_its_stage():
    mem = StageMemory(interval=0.01)
    mem.stage("small")
    mem.stage("big")
    block = np.ones(64 * 2**20 // 8)  # 64 MiB of anonymous pages, touched
    mem.stage("after")
    del block
    mem.stop()
    stages = mem.record()["stages"]
    assert stages["big"]["anon_mib"] - stages["small"]["anon_mib"] > 50
    assert set(read_rss()) == {"anon_mib", "file_mib"}


@pytest.mark.parametrize("lists", [False, True])
def test_vectors_added_in_batches_give_the_same_index_bytes(monkeypatch, lists):
    """add_vectors feeds FAISS ADD_BATCH vectors at a time (PQ's distance tables for one batch, not
    for a whole shard): the same index, byte for byte, as one call, with assigned or given lists."""
    import faiss

    from geoindex.index import builder

    rng = np.random.default_rng(3)
    xb = rng.standard_normal((1000, 512)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    ids = rng.permutation(10_000)[:1000].astype(np.int64)
    assign = rng.integers(0, 16, 1000).astype(np.int64) if lists else None
    trained = faiss.index_factory(512, "IVF16,PQ16", faiss.METRIC_INNER_PRODUCT)
    faiss.downcast_index(faiss.extract_index_ivf(trained)).do_polysemous_training = False  # seconds, not minutes
    trained.train(xb)
    blob = faiss.serialize_index(trained)
    out = []
    for batch in (10_000, 96):
        monkeypatch.setattr(builder, "ADD_BATCH", batch)
        index = faiss.deserialize_index(blob)
        builder.add_vectors(index, xb, ids, assign)
        out.append(faiss.serialize_index(index).tobytes())
    assert out[0] == out[1] and faiss.deserialize_index(np.frombuffer(out[1], np.uint8)).ntotal == 1000


def test_the_self_check_reads_a_mapped_index_that_answers_as_the_built_one(tmp_path):
    """After writing vectors.faiss the build re-opens it with its lists mapped (file-backed pages,
    not the driver's anonymous memory) and its search settings applied: the same answers."""
    import faiss

    from geoindex.pipeline.write import reopen_mapped
    from geoindex.index.search import SearchSettings, apply_search_settings

    rng = np.random.default_rng(5)
    xb = rng.standard_normal((3000, 512)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    built = faiss.index_factory(512, "IVF32_HNSW32,PQ16", faiss.METRIC_INNER_PRODUCT)
    faiss.downcast_index(faiss.extract_index_ivf(built)).do_polysemous_training = False
    built.train(xb)
    built.add(xb)
    search = SearchSettings.parse("nprobe=6,quantizer_efSearch=24,rerank=40")
    apply_search_settings(built, search)
    faiss.write_index(built, str(tmp_path / "vectors.faiss"))
    mapped = reopen_mapped(tmp_path, search)
    ivf = faiss.extract_index_ivf(mapped)
    assert type(ivf.invlists) is not faiss.ArrayInvertedLists and ivf.nprobe == 6
    assert faiss.downcast_index(ivf.quantizer).hnsw.efSearch == 24  # not serialised: applied again
    D0, I0 = built.search(xb[:100], 10)
    D1, I1 = mapped.search(xb[:100], 10)
    assert (I0 == I1).all() and (D0 == D1).all()
