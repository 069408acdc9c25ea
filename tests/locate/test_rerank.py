"""Exact re-ranking (``rerank=R``): the top R candidates of a compact index, re-scored by
re-encoding their cell centres, against brute force over the exact vectors."""

import numpy as np
import pytest

from geoindex.cli.build import main as build_main
from geoindex.errors import InvalidArgumentError
from geoindex import Geolocator, QueryOptions
from geoindex.encoders.location import encode_latlng
from geoindex.locate.regions import make_filter
from geoindex.index.search import SearchSettings

pytestmark = pytest.mark.slow  # ~30 s of res-2 PQ builds: the full suite (make test-all) runs them

NLIST_R0 = 122  # res-0 cells: IVFH3 lists of a res-2 gallery


@pytest.fixture(scope="module")
def pq_r2(tmp_path_factory):
    """Res 2, all 5,882 cells, 8-byte codes (PQ16x4): a deliberately lossy index, re-ranking on,
    with the encoder (no exact store: tests/store/test_store.py re-ranks from one)."""
    out = tmp_path_factory.mktemp("pq") / "r2"
    assert build_main(["--resolution", "2", "--cells", "all", "--out", str(out), "--factory", "IVFH3,PQ16x4",
                       "--search", f"nprobe={NLIST_R0},rerank=100", "--store", "none", "--no-progress", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def exact(pq_r2, encoder, gallery_100k):
    """(geolocator, queries at 300 photo locations, gallery ids, exact gallery vectors)."""
    geo = Geolocator(pq_r2)
    xq = encode_latlng(encoder, gallery_100k[np.random.default_rng(3).choice(len(gallery_100k), 300, replace=False)])
    xb = encode_latlng(encoder, np.column_stack((geo.table.lat, geo.table.lng)))
    return geo, xq, geo.table.cell, xb


def recall10(I, gt):
    return float(np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(I.tolist(), gt.tolist())]))


def test_build_self_check_reranks_like_a_query(pq_r2, exact):
    check = exact[0].dir.manifest["self_check"]
    # the same build without rerank measured self-hit@1 0.82 and recall@10 0.38 (PQ16x4 codes)
    assert check["self_hit_at_1"] >= 0.99 and check["recall_at_10"] >= 0.6


def test_rerank_restores_exact_order_of_the_candidates(exact):
    geo, xq, ids, xb = exact
    assert geo.rerank_depth == 100  # stored in the manifest's search string
    D0, I0 = geo.search(xq, 100, QueryOptions(search="rerank=0"))  # FAISS alone, PQ scores
    D, I = geo.search(xq, 100, QueryOptions())
    rows = geo.table.rows(I0)
    true = np.einsum("qd,qkd->qk", xq, xb[rows])
    order = np.argsort(-true, axis=1, kind="stable")
    # the same 100 candidates, now in exact order with exact cosines
    assert np.array_equal(np.sort(I, axis=1), np.sort(I0, axis=1))
    assert np.array_equal(I, np.take_along_axis(I0, order, 1))
    assert np.allclose(D, np.take_along_axis(true, order, 1), atol=1e-5)
    assert not np.allclose(D0, np.take_along_axis(true, np.arange(100)[None].repeat(len(xq), 0), 1), atol=1e-3)


def test_rerank_recovers_recall_lost_by_the_codes(exact):
    geo, xq, ids, xb = exact
    gt = ids[np.argsort(-(xq @ xb.T), axis=1)[:, :10]]
    _, I0 = geo.search(xq, 10, QueryOptions(search="rerank=0"))
    _, I20 = geo.search(xq, 10, QueryOptions(search="rerank=20"))  # per call: a shallower re-rank
    _, I = geo.search(xq, 10, QueryOptions())  # the manifest's rerank=100
    plain, shallow, deep = recall10(I0, gt), recall10(I20, gt), recall10(I, gt)
    assert plain < 0.5  # 8-byte codes lose most of the order (res 2 aliases: close scores far apart)
    assert plain + 0.05 < shallow < deep and deep >= plain + 0.3
    assert np.mean(I[:, 0] == gt[:, 0]) >= np.mean(I0[:, 0] == gt[:, 0]) + 0.5
    # re-ranking most of the gallery (the cap, 4,096 of 5,882 cells) comes close to brute force,
    # and whenever the true top-1 is among the candidates it comes first
    _, Iall = geo.search(xq, 10, QueryOptions(search="rerank=4096"))
    _, cand = geo.search(xq, 4096, QueryOptions(search="rerank=0"))
    found = (cand == gt[:, :1]).any(axis=1)
    assert recall10(Iall, gt) >= 0.99 and found.mean() >= 0.9
    assert np.array_equal(Iall[found, 0], gt[found, 0])


def test_rerank_through_locate_gives_exact_scores_and_probabilities(exact):
    geo, xq, ids, xb = exact
    res = geo.locate(xq[:20], QueryOptions(k=5, candidates=50, search="rerank=50"))
    for q, r in enumerate(res):
        top = [p.cell for p in r.predictions]
        scores = [p.score for p in r.predictions]
        assert scores == sorted(scores, reverse=True)
        assert np.allclose(scores, xb[geo.table.rows(np.array(top))] @ xq[q], atol=1e-5)


def test_probabilities_use_exact_scores_for_the_reranked_head(exact):
    geo, xq, ids, xb = exact
    res = geo.locate(xq[:10], QueryOptions(k=5, candidates=256, search="rerank=20"))
    D, I = geo.search(xq[:10], 256, QueryOptions(search="rerank=20"))
    for q, r in enumerate(res):
        assert np.allclose(D[q, :20], xb[geo.table.rows(I[q, :20])] @ xq[q], atol=1e-5)  # the head: exact
        soft = np.exp(geo.logit_scale * (D[q] - D[q].max()))
        soft /= soft.sum()
        assert np.allclose([p.probability for p in r.predictions], soft[:5], atol=1e-6)
        assert [p.cell for p in r.predictions] == I[q, :5].tolist()
    # more predictions than the re-ranking depth: all of them re-ranked, scores exact and sorted
    [wide] = geo.locate(xq[:1], QueryOptions(k=40, search="rerank=20"))
    scores = [p.score for p in wide.predictions]
    assert len(scores) == 40 and scores == sorted(scores, reverse=True)
    assert np.allclose(scores, xb[geo.table.rows(np.array([p.cell for p in wide.predictions]))] @ xq[0], atol=1e-5)


def test_rerank_inside_a_region(exact):
    geo, xq, ids, xb = exact
    region = make_filter(bboxes=["-10,35,30,60"])
    inside = (geo.table.lat >= 35) & (geo.table.lat <= 60) & (geo.table.lng >= -10) & (geo.table.lng <= 30)
    truth = ids[inside][np.argsort(-(xq[:10] @ xb[inside].T), axis=1)[:, :5]]
    got = geo.locate(xq[:10], QueryOptions(k=5, region=region, search=f"rerank={int(inside.sum())}"))
    assert [[p.cell for p in r.predictions] for r in got] == truth.tolist()


@pytest.mark.parametrize("search", ["rerank=-1", "rerank=x", "rerank=5000", "nprobe=4,rerank="])
def test_bad_rerank_is_refused_at_query_and_build(exact, tmp_path, capsys, search):
    geo = exact[0]
    with pytest.raises(InvalidArgumentError, match="rerank takes an integer"):
        geo.locate(exact[1][:1], QueryOptions(search=search))
    out = tmp_path / "never"
    assert build_main(["--resolution", "0", "--out", str(out), "--search", search, "--no-progress", "-q"]) == 2
    assert "rerank takes an integer" in capsys.readouterr().err and not out.exists()


def split_search(search):
    """(FAISS's part, rerank) of a search string, through the one parser."""
    settings = SearchSettings.parse(search)
    return settings.faiss_string(), settings.rerank


def test_split_search():
    assert split_search("nprobe=16,rerank=32") == ("nprobe=16", 32)
    assert split_search("rerank=0") == ("", 0)
    assert split_search("nprobe=16") == ("nprobe=16", None)
    assert split_search(None) == ("", None)


def test_concurrent_reranks_share_one_encoder_batch():
    """Server threads re-ranking at once: one fn call serves every caller queued meanwhile, each
    gets exactly its own rows, and an error reaches the callers of its batch only."""
    import threading
    import time

    from geoindex.locate.rerank import Coalescer

    seen = []

    def fn(ids):
        seen.append(len(ids))
        time.sleep(0.05)  # an encoder pass: long enough for the other threads to queue
        if (ids == 666).any():
            raise ValueError("bad id 666")
        return np.column_stack((ids, 2 * ids)).astype(np.float32)

    batches = Coalescer(fn)
    barrier = threading.Barrier(8)
    out: dict[int, object] = {}

    def caller(i):
        ids = np.array([i, i + 100, 7])  # id 7 is everyone's: encoded once a batch
        barrier.wait()
        out[i] = batches(ids)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert np.array_equal(out[i], [[i, 2 * i], [i + 100, 2 * i + 200], [7, 14]])
    assert batches.callers == 8 and batches.calls <= 3 and sum(seen) < 8 * 3  # shared, deduplicated
    # an error fails its own batch, and the coalescer keeps serving
    with pytest.raises(ValueError, match="666"):
        batches(np.array([666]))
    assert np.array_equal(batches(np.array([5])), [[5, 10]])
