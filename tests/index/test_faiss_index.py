import faiss
import numpy as np
import pytest

from geoindex.cells.gallery import h3_shard, h3_shard_roots
from geoindex.cells.h3ids import cell_to_parent
from geoindex.encoders.location import encode_latlng
from geoindex.errors import InvalidArgumentError
from geoindex.index import factory as faiss_index
from geoindex.index.builder import IndexBuilder
from geoindex.index.search import SearchSettings, apply_search_settings, per_call_params
from tests.helpers.search import brute_force_topk, recall_at


def test_nlist_rule():
    assert faiss_index.nlist_rule(1_000_000) == 4096
    assert faiss_index.nlist_rule(573_000) == 4096
    assert faiss_index.nlist_rule(40_000) == 1024
    assert faiss_index.nlist_rule(13_000) == 333  # 512 capped at n // 39
    assert faiss_index.nlist_rule(100) == 2  # capped at n // 39


@pytest.mark.parametrize("factory,res,n,expected", [
    ("auto", 2, 2203, "Flat"),
    ("auto", 3, 13_483, "IVF345,SQ8"),
    ("auto", None, 5_000, "Flat"),
    ("auto", 5, 594_367, "IVFH3r2,PQ32"),
    ("auto", 6, 4_084_324, "IVFH3r2,PQ32"),
    ("auto", 9, 10**9, "IVFH3r5,PQ32"),  # beyond the measured range: res 6's choice, lists 4 levels up
    ("auto", None, 100_000, "IVF1024,SQ8"),
    ("IVF,PQ64", 5, 573_000, "IVF4096,PQ64"),
    ("IVFH3r1,SQ8", 4, 88_000, "IVFH3r1,SQ8"),
    ("IVFH3_HNSW32,SQ4", 6, 4_084_324, "IVFH3r3_HNSW32,SQ4"),
    ("IVF256,Flat", 3, 13_000, "IVF256,Flat"),
])
def test_resolve(factory, res, n, expected):
    assert faiss_index.resolve(factory, n, res, n_parents=10).factory == expected


@pytest.mark.parametrize("factory,res,match", [
    ("Bogus", 3, "bad index factory string 'Bogus'"),
    ("IVFH3r3,SQ8", 3, "coarser"),
    ("IVFH3,SQ8", None, "not an H3 gallery"),
    ("IVFH3", 3, "names no codec"),
    ("IVFH3,PQ16,RFlat", 5, "single codec"),
    ("IVF,PQ7", 3, "bad index factory"),
    ("IVFH3_HNSW,SQ8", 3, "bad index factory"),
])
def test_bad_factories(factory, res, match):
    with pytest.raises(InvalidArgumentError, match=match):
        faiss_index.check_factory(factory, res)


def test_search_params_checked_before_building():
    faiss_index.check_factory("auto", 5, SearchSettings.parse("nprobe=32"))
    with pytest.raises(InvalidArgumentError, match="do not fit"):
        faiss_index.check_factory("auto", 2, SearchSettings.parse("nprobe=32"))  # auto is Flat at res 2


def test_bad_search_params():
    index = faiss_index.new_index(faiss_index.resolve("IVF16,SQ8", 1000, 3))
    with pytest.raises(InvalidArgumentError, match="nprobe=16"):
        apply_search_settings(index, SearchSettings.parse("efSearch=12"))


@pytest.fixture(scope="module")
def res3_land(encoder):
    roots = h3_shard_roots(3)
    batches = [h3_shard(r, 3, "land") for r in roots]
    ids = np.concatenate([b.cell for b in batches])
    latlng = np.concatenate([b.latlng for b in batches])
    return ids, encode_latlng(encoder, latlng), latlng


def _queries(encoder, latlng, m=400):
    """Real-photo-like queries: points scattered around gallery centres (up to ~50 km)."""
    rng = np.random.default_rng(7)
    pick = latlng[rng.choice(len(latlng), m, replace=False)]
    pts = pick + rng.normal(0, 0.25, pick.shape)
    pts[:, 0] = np.clip(pts[:, 0], -89.9, 89.9)
    pts[:, 1] = (pts[:, 1] + 180) % 360 - 180
    return encode_latlng(encoder, pts)


def test_hnsw_quantizer_plan_and_search_settings():
    plan = faiss_index.resolve("IVFH3_HNSW32,SQ8", 13_483, 3, n_parents=122)
    assert plan.faiss_factory == "IVF122_HNSW32,SQ8" and plan.h3_list_res == 0
    search = faiss_index.default_search("IVFH3_HNSW32,SQ8", plan)
    assert str(search) == "nprobe=16,quantizer_efSearch=256"
    index = faiss_index.new_index(plan)
    apply_search_settings(index, search)
    assert faiss.downcast_index(index.quantizer).hnsw.efSearch == 256
    params = per_call_params(index, SearchSettings.parse("quantizer_efSearch=32"))
    assert params.referenced_objects[0].efSearch == 32 and params.nprobe == 16 and params.quantizer_params is not None
    with pytest.raises(InvalidArgumentError, match="nprobe=N .* and quantizer_efSearch=N"):
        per_call_params(index, SearchSettings.parse("efSearch=32"))


@pytest.mark.parametrize("factory,search,bound", [
    ("IVFH3r0,SQ8", "nprobe=16", 0.90),
    ("IVFH3r0_HNSW32,SQ8", "nprobe=16,quantizer_efSearch=256", 0.90),
    ("IVF,SQ8", "nprobe=16", 0.85),
    ("Flat", "", 0.999),
])
def test_ann_recall_against_brute_force(encoder, res3_land, factory, search, bound):
    ids, xb, latlng = res3_land
    plan = faiss_index.resolve(factory, len(ids), 3, n_parents=None if "H3" not in factory else
                               len(np.unique(cell_to_parent(ids, 0))))
    builder = IndexBuilder(plan, use_gpu=False)
    lists = None
    if plan.h3_list_res is not None:
        parents = np.unique(cell_to_parent(ids, plan.h3_list_res))
        lists = np.searchsorted(parents, cell_to_parent(ids, plan.h3_list_res))
        sums = np.zeros((len(parents), 512))
        np.add.at(sums, lists, xb)
        builder.set_h3_centroids((sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32))
    builder.train(xb)
    builder.add(xb, ids, lists)
    index = builder.finish()
    apply_search_settings(index, SearchSettings.parse(search))
    assert index.ntotal == len(ids)
    xq = _queries(encoder, latlng)
    _, I = index.search(xq, 10)
    recall = recall_at(I, brute_force_topk(xq, xb, ids, 10))
    assert recall >= bound, f"{factory} recall@10 {recall:.3f} < {bound}"
