"""The photo build through the one gallery pipeline (geoindex/pipeline/skeleton.py): the self-check
its manifest records, answered the way a reader searches the gallery, and its work dir's
fingerprint, which resumes and restarts as the cell build's does."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from geoindex.index.search import SearchSettings


def test_a_photo_gallery_records_its_self_check(photos_ref):
    """Flat is exact: every photo's own embedding finds it first, and the top 10 are exact search's."""
    m = json.loads((photos_ref / "manifest.json").read_text())
    assert m["index"]["factory"] == "Flat"
    assert m["self_check"] == {"queries": 40, "self_hit_at_1": 1.0, "recall_at_10": 1.0}
    assert set(m["timings_s"]) >= {"features", "train", "add", "write_index", "self_check", "metadata_db", "total"}


@pytest.mark.slow
def test_the_self_check_searches_as_a_reader_does(photos_ref, tmp_path):
    """A coarse index (1 of 4 lists probed, 20 candidates re-ranked from the fp16 store): the
    manifest's recall@10 and self-hit@1 are what PhotoGallery.search answers for the same seeded
    photos, against exact search over the stored vectors."""
    from geoindex.photos.build import PhotoBuildConfig, build_photos
    from geoindex.photos.gallery import PhotoGallery

    csv = json.loads((photos_ref / "manifest.json").read_text())["csv"]["path"]
    m = build_photos(PhotoBuildConfig(csv=csv, out=tmp_path / "ivf", clip_model="tiny-test", device="cpu",
                                      factory="IVF4,SQ8", search=SearchSettings.parse("nprobe=1,rerank=20"),
                                      seed=5, progress=False))
    xb = np.load(tmp_path / "ivf" / "exact.npy").astype(np.float32)
    rows = np.sort(np.random.default_rng(5 + 1).choice(len(xb), size=len(xb), replace=False))
    _, I = PhotoGallery(tmp_path / "ivf").search(xb[rows], 10)
    exact = np.argsort(-(xb[rows] @ xb.T), axis=1, kind="stable")[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, exact)])
    assert m["self_check"] == {"queries": 40, "self_hit_at_1": round(float(np.mean(I[:, 0] == rows)), 4),
                               "recall_at_10": round(float(recall), 4)}
    assert m["self_check"]["recall_at_10"] < 1.0  # one list of four: the check sees what probing loses


@pytest.mark.slow
def test_a_photo_work_dir_resumes_only_its_own_fingerprint(photos_ref, tmp_path, monkeypatch, caplog):
    """A build stopped after encoding keeps its features in .REF.partial (stamped with what they
    depend on); the same build resumes them, and a build of another CSV empties the work dir and
    encodes afresh, as a cell build does with another plan's shards."""
    from geoindex.photos import stream
    from geoindex.photos.build import PhotoBuildConfig, build_photos
    from geoindex.pipeline import image_features

    csv = json.loads((photos_ref / "manifest.json").read_text())["csv"]["path"]
    out = tmp_path / "ref"
    config = PhotoBuildConfig(csv=csv, out=out, clip_model="tiny-test", device="cpu", progress=False)
    real_fill, real_cache = stream.fill, image_features.cache_features
    monkeypatch.setattr(stream, "fill", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        build_photos(config)
    stamp = json.loads((tmp_path / ".ref.partial" / "build.json").read_text())
    assert stamp["kind"] == "photos" and stamp["clip_model"] == "tiny-test" and stamp["device_type"] == "cpu"
    monkeypatch.setattr(stream, "fill", real_fill)

    other = tmp_path / "other.csv"  # the same photos less the last: another CSV checksum
    other.write_text("\n".join(open(csv).read().splitlines()[:-1]) + "\n")
    encoded = []
    monkeypatch.setattr(image_features, "cache_features", lambda *a, **k: (encoded.append(a[0]), real_cache(*a, **k)))
    with caplog.at_level(logging.WARNING, logger="geoindex.workstate"):
        m = build_photos(PhotoBuildConfig(**{**vars(config), "csv": other, "image_root": Path(csv).parent}))
    assert "csv_sha256" in caplog.text and "starting afresh" in caplog.text
    assert encoded == [other] and m["photos"] == 39 and not (tmp_path / ".ref.partial").exists()

    monkeypatch.setattr(stream, "fill", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        build_photos(PhotoBuildConfig(**{**vars(config), "overwrite": True}))
    monkeypatch.setattr(stream, "fill", real_fill)
    encoded.clear()
    m = build_photos(PhotoBuildConfig(**{**vars(config), "overwrite": True}))  # the same build: resumed
    assert encoded == [] and m["photos"] == 40
    assert m["self_check"]["self_hit_at_1"] == 1.0
