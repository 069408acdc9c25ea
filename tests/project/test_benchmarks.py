"""The evaluation code behind the benchmarks (offline, tiny data)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import bench_accuracy  # noqa: E402
from common import haversine_km, noisy  # noqa: E402
from geo_eval import Gallery100K, accuracy_table  # noqa: E402


def test_accuracy_table_counts_thresholds():
    t = accuracy_table(np.array([0.5, 10, 100, 500, 1000, 3000, 30, 2.0]))
    assert t["within_1km"] == 12.5 and t["within_25km"] == 37.5 and t["within_200km"] == 62.5
    assert t["within_750km"] == 75.0 and t["within_2500km"] == 87.5 and t["n"] == 8
    assert t["median_km"] == 65.0


def test_haversine_known_distance():
    # Paris - London ~ 344 km
    assert abs(haversine_km(48.8566, 2.3522, 51.5074, -0.1278) - 343.5) < 2


def test_noise_hits_the_target_cosine():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(200, 512)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    n = noisy(q, 0.5)
    assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
    assert np.allclose((n * q).sum(axis=1), 0.5, atol=1e-4)


@pytest.fixture(scope="module")
def g100k():
    return Gallery100K()


@pytest.mark.slow
def test_100k_gallery_oracle_and_leave_one_out(g100k):
    rows = np.array([0, 17, 4242, 99_999])
    xq = g100k.vectors[rows]
    exact = g100k.top1_latlng(xq)
    assert np.allclose(exact, g100k.latlng[rows])  # its own point, 0 km
    loo = g100k.top1_latlng(xq, exclude_rows=rows)
    d = haversine_km(loo[:, 0], loo[:, 1], g100k.latlng[rows, 0], g100k.latlng[rows, 1])
    assert (d > 0).all() or (loo != exact).any(axis=1).all()


@pytest.mark.slow
def test_bench_accuracy_end_to_end(tmp_path, built_r2, g100k):
    rng = np.random.default_rng(1)
    lines = ["image,lat,lng"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
        lat, lng = g100k.latlng[i * 1000]
        lines.append(f"{i}.jpg,{lat},{lng}")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    lines.append("broken.jpg,10,10")
    (tmp_path / "eval.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "acc.json"
    assert bench_accuracy.main(["--csv", str(tmp_path / "eval.csv"), "--index", str(built_r2), "--gallery-100k",
                                "--clip-model", "tiny-test", "--out", str(out), "--map", str(tmp_path / "e.png")]) == 0
    res = json.loads(out.read_text())
    assert (tmp_path / "e.png").stat().st_size > 10_000  # the map of the errors
    assert res["images"] == 7 and res["skipped"] == [str(tmp_path / "broken.jpg")]
    index_row, gallery_row, paper = res["rows"]
    for row, key in ((index_row, str(built_r2)), (gallery_row, "gallery_100k")):
        errs = np.array(res["errors_km"][key])
        assert len(errs) == 6 and row["n"] == 6
        acc = [row[f"within_{t}km"] for t in (1, 25, 200, 750, 2500)]
        assert acc == sorted(acc) and all(0 <= a <= 100 for a in acc)
        assert row["median_km"] == round(float(np.median(errs)), 2)
    assert paper["within_1km"] == 14.11


def test_bench_accuracy_rejects_bad_csv(tmp_path):
    (tmp_path / "bad.csv").write_text("image,lat,lng\na.jpg,north,3\n")
    with pytest.raises(SystemExit, match="row 1"):
        bench_accuracy.main(["--csv", str(tmp_path / "bad.csv"), "--gallery-100k", "--clip-model", "tiny-test"])


def test_default_choice_rule():
    import recall_rules as bench_recall

    assert bench_recall.code_bytes("IVF1024,PQ128,Refine(SQ8) (k_factor 8)") == 640
    assert bench_recall.code_bytes("IVFH3r2,SQ8") == 512 and bench_recall.code_bytes("Flat") == 2048
    rows = [
        {"resolution": 5, "queries": "photo", "factory": "Flat", "nprobe": None, "recall_at_10": 1.0, "ms_per_query": 0.9},
        {"resolution": 5, "queries": "photo", "factory": "IVF9,SQ8", "nprobe": 16, "recall_at_10": 0.94, "ms_per_query": 0.1},
        {"resolution": 5, "queries": "photo", "factory": "IVF9,SQ8", "nprobe": 64, "recall_at_10": 0.97, "ms_per_query": 0.3},
        {"resolution": 5, "queries": "photo", "factory": "IVF9,SQ8", "nprobe": 256, "recall_at_10": 0.99, "ms_per_query": 1.2},
        {"resolution": 5, "queries": "photo", "factory": "IVF9,PQ64", "nprobe": 16, "recall_at_10": 0.80, "ms_per_query": 0.1},
        {"resolution": 5, "queries": "photo+noise", "factory": "IVF9,PQ32", "nprobe": 16, "recall_at_10": 0.99, "ms_per_query": 0.1},
        # fewer code bytes, but slower than exact search: no reason to exist
        {"resolution": 5, "queries": "photo", "factory": "IVF9,SQ4", "nprobe": 64, "recall_at_10": 0.96, "ms_per_query": 0.95},
    ]
    for r in rows:
        r.update(bytes_per_vector=0, km_lost_p99=0, build_s=0)
    choice = bench_recall.choose_default(rows, 5)
    assert (choice["factory"], choice["nprobe"]) == ("IVF9,SQ8", 64)  # cheapest codes reaching 0.95 in 1 ms
    rows[-1]["ms_per_query"] = 0.5
    assert bench_recall.choose_default(rows, 5)["factory"] == "IVF9,SQ4"
    # a store-backed configuration (fewer code bytes) wins only if its top-1s stay within one edge
    stored = {"resolution": 5, "queries": "photo", "factory": "IVF9,PQ32 (rerank 256, fp16 store)", "nprobe": 32,
              "rerank": 256, "recall_at_10": 0.97, "ms_per_query": 0.6, "disk_bytes_per_vector": 1024,
              "bytes_per_vector": 0, "km_lost_p99": 20.0, "build_s": 0}
    assert bench_recall.choose_default(rows + [stored], 5)["factory"] == "IVF9,SQ4"  # res-5 edge: 9.9 km
    choice = bench_recall.choose_default(rows + [{**stored, "km_lost_p99": 0.0}], 5)
    assert (choice["factory"], choice["rerank"]) == ("IVF9,PQ32 (rerank 256, fp16 store)", 256)


def test_builder_defaults_are_the_measured_choice():
    """MEASURED_DEFAULTS (geoindex.index.factory) must be what bench_recall chose from
    results/recall.json: re-deciding from the saved rows with the current rule gives the same
    codec and nprobe."""
    import recall_rules as bench_recall
    from common import RESULTS

    from geoindex.index import factory as faiss_index

    saved = json.loads((Path(RESULTS) / "recall.json").read_text())
    chosen = {c["resolution"]: c for c in bench_recall.chosen_all(saved["rows"])}
    assert chosen == {c["resolution"]: c for c in saved["chosen"]}, "recall.json's 'chosen' is stale: rerun bench_recall"
    assert sorted(chosen) == sorted(faiss_index.MEASURED_DEFAULTS)
    for res, c in chosen.items():
        n = next(r["n"] for r in saved["rows"] if r["resolution"] == res)
        factory, search = faiss_index.auto_choice(res)
        plan = faiss_index.resolve(factory, n, res, n_parents=1)  # IVFH3 names no list count
        assert plan.factory == c["factory"].split(" (")[0], res
        assert str(search) == f"nprobe={c['nprobe']}" + (f",rerank={c['rerank']}" if c["rerank"] else ""), res


def test_best_compact_code_and_the_goal():
    """The <= 128 B goal table: plain codes within 1 ms by recall; re-ranked ones by speed among
    those meeting recall@10 >= 0.95 and km lost p99 <= one H3 edge (res 6: 3.7 km)."""
    import recall_rules as bench_recall

    base = {"resolution": 6, "queries": "photo", "recall_at_1": 0.9}
    rows = [
        {**base, "factory": "IVFH3r3,PQ128", "nprobe": 16, "recall_at_10": 0.92, "km_lost_p99": 6.8, "ms_per_query": 0.5},
        {**base, "factory": "IVFH3r3,PQ128", "nprobe": 256, "recall_at_10": 0.93, "km_lost_p99": 6.8, "ms_per_query": 4.8},
        {**base, "factory": "IVFH3r3,SQ4", "nprobe": 16, "recall_at_10": 0.97, "km_lost_p99": 6.6, "ms_per_query": 0.4},
        {**base, "factory": "IVFH3r3,PQ64 (rerank 16)", "nprobe": 4, "rerank": 16, "recall_at_10": 0.93,
         "km_lost_p99": 0.0, "ms_per_query": 2.8},
        {**base, "factory": "IVFH3r3,PQ64 (rerank 32)", "nprobe": 16, "rerank": 32, "recall_at_10": 0.976,
         "km_lost_p99": 0.0, "ms_per_query": 5.1},
        {**base, "factory": "IVFH3r3,PQ64 (rerank 32)", "nprobe": 4, "rerank": 32, "recall_at_10": 0.969,
         "km_lost_p99": 4.0, "ms_per_query": 5.0},  # over one edge: not the goal
        {**base, "factory": "IVFH3r3,PQ128 (rerank 64)", "nprobe": 4, "rerank": 64, "recall_at_10": 0.99,
         "km_lost_p99": 0.0, "ms_per_query": 9.0},
    ]
    plain = bench_recall.best_compact(rows, 6, rerank=False)
    assert (plain["factory"], plain["nprobe"]) == ("IVFH3r3,PQ128", 16)  # SQ4 is 256 B; nprobe 256 is over 1 ms
    best = bench_recall.best_compact(rows, 6, rerank=True)
    assert (best["factory"], best["nprobe"]) == ("IVFH3r3,PQ64 (rerank 32)", 16)
    assert bench_recall.code_bytes(best["factory"]) == 64
    assert bench_recall.best_compact([r for r in rows if r.get("rerank") != 32 and r.get("rerank") != 64], 6,
                                     rerank=True)["factory"] == "IVFH3r3,PQ64 (rerank 16)"  # none meets: best recall
