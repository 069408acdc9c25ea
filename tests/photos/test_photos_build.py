"""The reference photo build at scale: streamed (never all embeddings at once, same bytes as the
in-memory build), refusals before any photo is read, lists on disk, and a resident budget.

The photos are synthetic (:mod:`geoindex.train.synthetic`) through the tiny random CLIP; a feature
cache in small shards (64 rows) is made once, so the builds here only run GeoCLIP's head and FAISS.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from geoindex.errors import InvalidArgumentError
from geoindex.index.search import SearchSettings
from geoindex.photos import photo_index
from tests.helpers import REPO

N_PHOTOS = 300  # >= 256: PQ codes can be trained


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """300 reference photos, their feature cache in 5 shards of 64 rows, and a 10-degree cell index."""
    from geoindex.train.features import cache_features
    from geoindex.train.synthetic import write_photos

    root = tmp_path_factory.mktemp("photos-build")
    csv = write_photos(root / "ref", N_PHOTOS, seed=0, size=16)
    cache_features(csv, root / "feats", clip_model="tiny-test", device="cpu", shard_rows=64, dtype="float32",
                   progress=False)
    return {"root": root, "csv": csv, "feats": root / "feats"}


@pytest.fixture(scope="module")
def rows_csv(tmp_path_factory):
    """A CSV of 300 rows whose images do not exist: enough for every refusal made before a photo is opened."""
    path = tmp_path_factory.mktemp("rows") / "photos.csv"
    path.write_text("image,lat,lng\n" + "".join(f"{i}.png,{i % 80}.5,{i % 170}.25\n" for i in range(N_PHOTOS)))
    return path


def _build(gallery, out, **kw):
    from geoindex.photos.build import PhotoBuildConfig, build_photos

    return build_photos(PhotoBuildConfig(csv=gallery["csv"], out=out, features=gallery["feats"],
                                         clip_model="tiny-test", progress=False, **kw))


def _in_memory_reference(feats: Path, factory: str, seed: int, batch: int, chunk: int, per_list: int):
    """The pre-streaming build, kept here as the reference: every embedding in one (n, 512) array,
    the index trained on xb[sorted seeded sample] and filled in chunks; returns (index bytes, xb)."""
    import torch

    from geoindex.encoders.clip import load_geoclip_head
    from geoindex.train.features import FeatureCache

    cache, head = FeatureCache(feats), load_geoclip_head(None)
    xb = np.empty((len(cache), 512), np.float32)
    with torch.inference_mode():
        for s in range(0, len(cache), batch):
            f = torch.from_numpy(cache.take(np.arange(s, min(s + batch, len(cache)))))
            xb[s : s + len(f)] = torch.nn.functional.normalize(head(f), dim=1).numpy()
    index = faiss.index_factory(512, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivf.cp.niter = 10
        ivf.do_polysemous_training = False
        nlist = int(2 ** round(np.log2(np.sqrt(len(xb)))))
        sample = np.random.default_rng(seed).choice(len(xb), min(len(xb), per_list * nlist), replace=False)
        index.train(xb[np.sort(sample)])
    for s in range(0, len(xb), chunk):
        index.add(xb[s : s + chunk])
    return faiss.serialize_index(index).tobytes(), xb


# -- streaming: the same bytes as the in-memory build --------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("factory,search", [("Flat", None), ("IVF8,PQ16x4", "nprobe=4,rerank=40")])
def test_streamed_build_is_byte_identical_to_the_in_memory_build(gallery, tmp_path, monkeypatch, factory, search):
    """Batches of 40 rows cross the cache's 64-row shards and chunks of 96 cut batches, the last
    chunk partial; the training sample is 8 photos a list (128 of 300): a vector out of place, lost
    or doubled, or another training sample changes vectors.faiss or exact.npy."""
    from geoindex.photos import stream

    monkeypatch.setattr(stream, "EMBED_BATCH", 40)
    monkeypatch.setattr(stream, "ADD_CHUNK", 96)
    monkeypatch.setattr("geoindex.index.training.TRAIN_PER_LIST", 8)
    monkeypatch.setattr("geoindex.index.training.TRAIN_MIN", 0)
    monkeypatch.setattr("geoindex.index.builder.ADD_BATCH", 32)  # each chunk reaches FAISS in 3 calls
    seen = []
    real = stream._in_memory

    def counting(index):
        add, finish = real(index)
        return (lambda ids, xb: (seen.append(len(xb)), add(ids, xb))), finish

    monkeypatch.setattr(stream, "_in_memory", counting)
    m = _build(gallery, tmp_path / "ref", factory=factory,
               search=None if search is None else SearchSettings.parse(search), seed=7)
    assert seen == [96, 96, 96, 12]  # chunk by chunk, never all 300 at once
    want, xb = _in_memory_reference(gallery["feats"], factory, seed=7, batch=40, chunk=96, per_list=8)
    assert (tmp_path / "ref" / "vectors.faiss").read_bytes() == want
    if search:
        store = np.load(tmp_path / "ref" / "exact.npy")
        assert store.dtype == np.float16 and store.tobytes() == xb.astype(np.float16).tobytes()
        assert m["index"]["train_size"] == 8 * 16 and m["store"]["kind"] == "fp16"
    else:
        assert not (tmp_path / "ref" / "exact.npy").exists()
    assert m["photos"] == N_PHOTOS and m["index"]["lists"] == "memory"


def test_chunks_regroup_batches_in_row_order(monkeypatch):
    """Embeddings.chunks: rows [k*size, (k+1)*size) whatever the batch size, ids the row numbers."""
    from geoindex.photos import stream

    class Fake(stream.Embeddings):
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def batches(self, rows=None):
            for s in range(0, self.n, stream.EMBED_BATCH):
                yield s, np.arange(s, min(s + stream.EMBED_BATCH, self.n), dtype=np.float32)[:, None]

    monkeypatch.setattr(stream, "EMBED_BATCH", 7)
    chunks = list(Fake(50).chunks(16))
    assert [len(ids) for ids, _ in chunks] == [16, 16, 16, 2]
    assert all((ids == xb[:, 0]).all() for ids, xb in chunks)
    rows = np.array([0, 3, 20, 49])
    assert Fake(50).take_sorted(rows)[:, 0].tolist() == [0, 3, 20, 49]


# -- refusals: exit 2 before any photo is read -------------------------------------------------------
REFUSALS = [
    (["--factory", "NotAFactory"], "--factory 'NotAFactory' is not a FAISS factory"),
    (["--factory", "Flat", "--search", "nprobe=4"], "needs a compressed index"),
    (["--search", "rerank=40"], "Flat (auto for 300 photos) is exact"),
    (["--factory", "IVF8,PQ16", "--search", "efSearch=4"], "do not fit this index"),
    (["--lists-on-disk"], "--lists-on-disk needs an IVF index"),
    (["--factory", "HNSW32", "--lists-on-disk"], "--lists-on-disk needs an IVF index"),
    (["--max-memory", "lots"], "--max-memory 'lots' is not a size"),
    (["--max-memory", "1GB", "--factory", "Flat"], "--max-memory picks the factory"),
    (["--max-memory", "100KB"], "fits no photo index for 300 photos"),
    (["--country", "FR"], "--country is a cell-index flag"),
    (["--store", "fp16"], "--store is a cell-index flag"),
    (["--ray", "--photos-features", "feats"], "with --photos-features nothing is encoded: drop --ray"),
]


@pytest.mark.parametrize("flags,message", REFUSALS, ids=[" ".join(f) for f, _ in REFUSALS])
def test_argument_refusals_come_before_any_photo_is_read(rows_csv, tmp_path, monkeypatch, capsys, flags, message):
    from geoindex.cli.build import main

    for target in ("geoindex.train.features.cache_features", "geoindex.train.features.FeatureCache",
                   "geoindex.photos.stream.Embeddings"):
        monkeypatch.setattr(target, lambda *a, **k: pytest.fail("a photo was read before the refusal"))
    t = time.perf_counter()
    rc = main(["--photos", str(rows_csv), "--out", str(tmp_path / "ref"), "--no-progress", "-q", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err
    assert time.perf_counter() - t < 3
    assert list(tmp_path.iterdir()) == []  # no REF, no .REF.partial, no temporary folder


@pytest.mark.parametrize("make", ["file", "under_file"])
def test_an_out_that_is_a_file_is_refused(rows_csv, tmp_path, capsys, make):
    from geoindex.cli.build import main

    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if make == "file" else tmp_path / "f" / "ref"
    assert main(["--photos", str(rows_csv), "--out", str(out), "-q"]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err and sorted(tmp_path.iterdir()) == [tmp_path / "f"]


@pytest.mark.slow
def test_a_refusal_as_a_user_meets_it(rows_csv, tmp_path):
    run = subprocess.run([sys.executable, "-m", "geoindex", "build", "--photos", str(rows_csv), "--out",
                          str(tmp_path / "ref"), "--max-memory", "100KB"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and run.stdout == "" and "give --max-memory 0.5" in run.stderr, run.stderr
    assert run.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []


# -- --max-memory ------------------------------------------------------------------------------------
def test_budget_takes_the_first_option_that_fits():
    assert photo_index.choose_for_budget(10**9, 100_000).pattern == "Flat"  # 205 MB
    assert photo_index.choose_for_budget(10**8, 100_000).factory(100_000) == "PCAR384,IVF256,PQ96x4fs"  # 8.3 MB
    n = 10_000_000
    assert photo_index.choose_for_budget(10**9, n).factory(n) == "PCAR384,IVF4096,PQ96x4fs"  # the default rule's
    assert photo_index.choose_for_budget(10**9, n).search(n) == "nprobe=224,rerank=2000"
    assert photo_index.choose_for_budget(500 * 10**6, n).factory(n) == "IVF4096_HNSW32,PQ32"  # 574 MB > 500 MB
    assert photo_index.choose_for_budget(10**9, n, lists_on_disk=True).cost == "PQ32"  # fast-scan lists: no map
    assert photo_index.choose_for_budget(300 * 10**6, n).cost == "PQ16"
    assert photo_index.choose_for_budget(200 * 10**6, n).cost == "PQ8"
    need = photo_index.predict_resident("PQ8", n)  # the cell build's prediction (index/budget.py)
    tables = faiss.serialize_index(photo_index.probe("IVF4096_HNSW32,PQ8")).size  # the empty index: PQ tables
    assert need == tables + n * (8 + 8) + 4096 * (512 * 4 + 64 * 4 + 32 + 16)  # + codes and ids + lists
    with pytest.raises(InvalidArgumentError, match=f"needs {need:,} B resident; give --max-memory"):
        photo_index.choose_for_budget(need - 1, n)
    assert photo_index.choose_for_budget(need, n).cost == "PQ8"
    with pytest.raises(InvalidArgumentError, match="fits no photo index for 100 photos"):  # too few to train PQ
        photo_index.choose_for_budget(10**5, 100)
    assert photo_index.choose_for_budget(10**8, 1000).pattern == "Flat"
    assert photo_index.choose_for_budget(10**6, 1000).cost == "PQ32"  # fewer than 1,024: PCA 384 cannot train


def test_default_rule_is_the_measured_one():
    """Flat up to 200,000 photos; above, bench_photos' fast-scan choice (10M: 57.1 B a photo measured,
    which the cost table must not under-predict, and at most the 64 B goal); the mappable PQ32 when
    the lists go to disk."""
    assert photo_index.choose_factory(200_000) == ("Flat", "")
    assert photo_index.choose_factory(200_000, lists_on_disk=True) == ("Flat", "")  # refused afterwards
    assert photo_index.choose_factory(1_000_000) == ("PCAR384,IVF1024,PQ96x4fs", "nprobe=128,rerank=2000")
    assert photo_index.choose_factory(10_000_000) == ("PCAR384,IVF4096,PQ96x4fs", "nprobe=224,rerank=2000")
    assert photo_index.choose_factory(10_000_000, lists_on_disk=True) == ("IVF4096_HNSW32,PQ32",
                                                                          "nprobe=32,rerank=400")
    per_vector = photo_index.predict_resident("PQ96x4fs", 10_000_000) / 10_000_000
    assert 57.1 <= per_vector <= 64
    from geoindex.photos.stream import train_size
    assert train_size(300) == 300 and train_size(1_000_000) == 65_536 and train_size(10_000_000) == 64 * 4096


@pytest.mark.slow
def test_the_default_compressed_kind_builds_and_finds_exact_copies(gallery, tmp_path, monkeypatch):
    """The default rule above FLAT_MAX, scaled to 300 photos (PCA to 64 dimensions: PCA 384 needs
    more photos than these): a PCA + fast-scan index, re-ranked from the fp16 store; each reference
    photo's own embedding finds it first at similarity >= 0.999, region filters hold, and with
    --lists-on-disk the rule takes the mappable PQ32 instead."""
    from geoindex.cells.region import BBox, RegionFilter
    from geoindex.photos.gallery import PhotoGallery

    monkeypatch.setattr(photo_index, "FLAT_MAX", 100)
    monkeypatch.setattr(photo_index, "COMPRESSED_FACTORY", "PCAR64,IVF{nlist},PQ16x4fs")
    m = _build(gallery, tmp_path / "ref")
    assert m["index"]["factory"] == "PCAR64,IVF16,PQ16x4fs" and m["index"]["search"] == "nprobe=128,rerank=2000"
    assert m["index"]["lists"] == "memory" and m["store"]["kind"] == "fp16"
    ref = PhotoGallery(tmp_path / "ref", verify="full")
    xq = np.load(tmp_path / "ref" / "exact.npy").astype(np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    D, I = ref.search(xq, 5)
    assert (I[:, 0] == np.arange(N_PHOTOS)).all() and (D[:, 0] >= 0.999).all()
    north = RegionFilter(bboxes=(BBox(-180.0, 0.0, 180.0, 90.0),))
    D, I = ref.search(xq[:50], 5, region=north)
    inside = set(ref.region_ids(north).tolist())
    assert inside and all(i in inside for i in I[I >= 0].tolist())
    m = _build(gallery, tmp_path / "disk", lists_on_disk=True)
    assert m["index"]["factory"] == "IVF16_HNSW32,PQ32" and m["index"]["lists"] == "disk"


@pytest.mark.slow
def test_a_budget_build_fits_and_the_refusal_names_a_budget_that_does(gallery, tmp_path, capsys):
    """600KB: Flat (615 KB for 300 photos) does not fit, IVF16_HNSW32,PQ32 does; 100KB fits nothing,
    and the size the refusal names builds."""
    from geoindex.cli.build import main
    from geoindex.photos.gallery import PhotoGallery

    m = _build(gallery, tmp_path / "ref", max_memory="600KB")
    assert m["index"]["factory"] == "IVF16_HNSW32,PQ32" and m["memory"]["max_memory"] == 600_000
    assert m["index"]["factory_requested"] == "--max-memory 600000" and m["store"]["kind"] == "fp16"
    resident = (tmp_path / "ref" / "vectors.faiss").stat().st_size
    assert m["memory"]["resident_bytes"] == resident <= m["memory"]["chosen"]["predicted_resident_bytes"] <= 600_000
    assert len(PhotoGallery(tmp_path / "ref")) == N_PHOTOS
    rc = main(["--photos", str(gallery["csv"]), "--photos-features", str(gallery["feats"]), "--clip-model",
               "tiny-test", "--out", str(tmp_path / "small"), "--max-memory", "100KB", "-q"])
    named = re.search(r"give --max-memory (\S+MB)", capsys.readouterr().err)
    assert rc == 2 and named
    m = _build(gallery, tmp_path / "small", max_memory=named[1])
    assert m["index"]["factory"] == "IVF16_HNSW32,PQ8"
    assert (tmp_path / "small" / "vectors.faiss").stat().st_size <= m["memory"]["max_memory"]


# -- --lists-on-disk -----------------------------------------------------------------------------------
def _lists(index):
    ivf = faiss.extract_index_ivf(index)
    inv = ivf.invlists
    return [(faiss.rev_swig_ptr(inv.get_ids(i), inv.list_size(i)).copy(),
             faiss.rev_swig_ptr(inv.get_codes(i), inv.list_size(i) * inv.code_size).copy())
            for i in range(ivf.nlist)]


@pytest.mark.slow
def test_lists_on_disk_hold_the_same_lists_and_answer_the_same(gallery, tmp_path, monkeypatch):
    from geoindex.photos import stream
    from geoindex.photos.gallery import PhotoGallery

    monkeypatch.setattr(stream, "ADD_CHUNK", 128)  # three parts
    kw = {"factory": "IVF8,PQ16", "search": SearchSettings.parse("nprobe=4,rerank=40")}
    _build(gallery, tmp_path / "mem", **kw)
    m = _build(gallery, tmp_path / "disk", lists_on_disk=True, **kw)
    assert m["index"]["lists"] == "disk" and "lists.ivfdata" in m["files"]
    assert m["memory"]["lists_disk_bytes"] == (tmp_path / "disk" / "lists.ivfdata").stat().st_size
    assert not (tmp_path / "disk" / ".parts").exists()
    assert m["memory"]["resident_bytes"] < json.loads((tmp_path / "mem" / "manifest.json").read_text())["memory"][
        "resident_bytes"] - N_PHOTOS * 16
    (tmp_path / "disk").rename(tmp_path / "moved")  # the lists are found beside vectors.faiss
    mem, disk = PhotoGallery(tmp_path / "mem"), PhotoGallery(tmp_path / "moved", verify="full")
    for (ia, ca), (ib, cb) in zip(_lists(mem.index), _lists(disk.index)):
        assert (ia == ib).all() and (ca == cb).all()
    xq = np.load(tmp_path / "mem" / "exact.npy")[:20].astype(np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    for a, b in zip(mem.search(xq, 5), disk.search(xq, 5)):
        assert (a == b).all()


@pytest.mark.slow
def test_locate_and_serve_open_an_on_disk_gallery_with_clean_stdout(gallery, tmp_path):
    """FAISS prints notices on stdout when it opens on-disk lists: `locate --format json` stays JSON,
    and the server answers from the same gallery."""
    from geoindex.cli.build import main
    from geoindex.train.synthetic import write_grid

    assert main(["--gallery-csv", str(write_grid(tmp_path / "grid.csv", step=30)), "--out", str(tmp_path / "cells"),
                 "--no-progress", "-q"]) == 0
    ref = tmp_path / "ref"
    assert main(["--photos", str(gallery["csv"]), "--photos-features", str(gallery["feats"]), "--clip-model",
                 "tiny-test", "--factory", "IVF8,PQ16", "--search", "nprobe=8,rerank=40", "--lists-on-disk",
                 "--out", str(ref), "--no-progress", "-q"]) == 0
    assert (ref / "lists.ivfdata").is_file()
    image = gallery["csv"].parent / "000003.png"
    from tests.helpers.cli_output import assert_clean_stdout

    argv = ["geoindex", "locate", str(image), "--index", str(tmp_path / "cells"), "--photos", str(ref),
            "--clip-model", "tiny-test", "--neighbours", "3", "--format"]
    answer = assert_clean_stdout([*argv, "json"], "json")[0]  # the installed command, stdout parsed whole
    assert answer["neighbours"][0]["image"] == "000003.png" and answer["neighbours"][0]["similarity"] >= 0.99
    assert assert_clean_stdout([*argv, "geojson"], "geojson")["features"]
    from fastapi.testclient import TestClient

    from geoindex.serve.app import create_app
    from geoindex.serve.settings import ServeSettings

    settings = ServeSettings(index=str(tmp_path / "cells"), clip_model="tiny-test", photos=str(ref))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:  # serve --photos REF
        r = client.post("/v1/locate", files={"images": ("q.png", image.read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["neighbours"][0]["image"] == "000003.png"


# -- --ray: CLIP features encoded on Ray actors ---------------------------------------------------------
def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.ray
def test_a_ray_encoded_gallery_is_the_one_process_gallery(gallery, cluster, tmp_path, monkeypatch):
    """Five shards of 64 photos on two CPU actors, one of which dies mid-way: the same vectors, bit for
    bit, and the same rows."""
    import duckdb

    from geoindex.cli.build import main

    monkeypatch.setattr("geoindex.photos.source.FEATURE_SHARD_ROWS", 64)
    (cluster / "photos00002.kill").touch()  # the actor handed shard 2 dies: Ray restarts it and retries
    flags = ["--photos", str(gallery["csv"]), "--clip-model", "tiny-test", "--no-progress", "-q"]
    # Ray's actors run torch; in one process `auto` may time ONNX Runtime faster and take it, and the
    # two agree to ~1e-12, not bit for bit: the bit-for-bit comparison is torch against torch
    assert main([*flags, "--backend", "torch", "--out", str(tmp_path / "one")]) == 0
    assert main([*flags, "--ray", "--out", str(tmp_path / "ray")]) == 0
    assert (cluster / "photos00002.killed").exists()
    assert _sha(tmp_path / "ray" / "vectors.faiss") == _sha(tmp_path / "one" / "vectors.faiss")
    query = "SELECT id, image, lat, lng, line, metadata FROM photos ORDER BY id"
    rows = [duckdb.connect(str(tmp_path / d / "photos.duckdb"), read_only=True).execute(query).fetchall()
            for d in ("one", "ray")]
    assert rows[0] == rows[1] and len(rows[0]) == N_PHOTOS
    m = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert m["encoder"]["encoded_on"] == "2 Ray cpu actors"


@pytest.mark.ray
def test_a_cache_interrupted_on_ray_resumes_in_one_process(gallery, cluster, tmp_path, monkeypatch):
    """The driver writes each shard the actors hand back, whole: a run stopped after two shards
    leaves two, and a run without Ray encodes only the rest into the same cache."""
    from geoindex.pipeline import image_features as features
    from geoindex.pipeline import image_shards

    kw = {"clip_model": "tiny-test", "device": "cpu", "shard_rows": 64, "dtype": "float32", "progress": False}
    real_write, written = image_shards.write_shard, []

    def stop_after_two(*a):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(a[0].name)
        real_write(*a)

    monkeypatch.setattr(image_shards, "write_shard", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        features.cache_features(gallery["csv"], tmp_path / "feats", ray="auto", **kw)
    monkeypatch.setattr(image_shards, "write_shard", real_write)
    assert sorted(p.name for p in (tmp_path / "feats" / "shards").iterdir()) == sorted(written)
    report = features.cache_features(gallery["csv"], tmp_path / "feats", **kw)
    assert report.encoded_now == N_PHOTOS - 128 and report.images == N_PHOTOS
    for s in range(5):
        for name in ("feats.npy", "rows.npy", "latlng.npy"):
            assert _sha(features.shard_dir(tmp_path / "feats", s) / name) == \
                _sha(features.shard_dir(gallery["feats"], s) / name)


@pytest.mark.slow
def test_the_metadata_table_written_in_parts_equals_one_part(gallery, tmp_path, monkeypatch):
    """photos.duckdb written 64 photos at a time (5 parts, the last partial) holds the same rows,
    ids and types as written in one part."""
    import duckdb

    from geoindex.photos import source

    _build(gallery, tmp_path / "one")
    monkeypatch.setattr(source, "METADATA_ROWS", 64)
    _build(gallery, tmp_path / "parts")

    def table(ref):
        con = duckdb.connect(str(ref / "photos.duckdb"), read_only=True)
        try:
            return con.execute("DESCRIBE photos").fetchall(), con.execute("SELECT * FROM photos ORDER BY id").fetchall()
        finally:
            con.close()

    (types, rows), (types2, rows2) = table(tmp_path / "one"), table(tmp_path / "parts")
    assert types == types2 and rows == rows2 and [r[0] for r in rows] == list(range(N_PHOTOS))
