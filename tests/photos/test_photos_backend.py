"""Photo builds on ONNX Runtime (``geoindex build --photos ... --backend onnx``): the CLIP features
of the tower alone, within cosine 0.99999 of torch's, and the same nearest photos."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from geoindex.encoders import onnx_tower  # noqa: E402


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    from geoindex.train.synthetic import write_photos

    return write_photos(tmp_path_factory.mktemp("photos-backend") / "photos", 40, seed=3, size=16)


def test_onnx_features_are_torch_features(csv, tmp_path):
    from geoindex.pipeline.image_features import FeatureCache, cache_features

    feats = {}
    for backend in ("torch", "onnx"):
        cache_features(csv, tmp_path / backend, clip_model="tiny-test", device="cpu", dtype="float32",
                       progress=False, backend=backend)
        feats[backend] = FeatureCache(tmp_path / backend).take(np.arange(40))
    assert feats["torch"].shape == (40, 768)  # the tower's features, not the head's 512-d output
    check = onnx_tower.agreement(feats["onnx"], feats["torch"])
    assert check["cosine_min"] >= onnx_tower.COSINE_MIN and check["max_abs_diff"] < 1e-4
    assert not np.array_equal(feats["onnx"], feats["torch"])  # really another runtime, not torch twice
    [record] = (onnx_tower.cache_dir() / "onnx").glob("tiny-test-*-features.json")
    assert "timing" in record.read_text()


def test_a_photo_build_with_backend_onnx_answers_as_torch(csv, tmp_path, capsys):
    from geoindex.cli import main
    from geoindex.photos.layout import VECTORS

    indexes = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / backend
        assert main(["build", "--photos", str(csv), "--out", str(out), "--clip-model", "tiny-test", "--device",
                     "cpu", "--backend", backend, "--no-progress"]) == 0
        indexes[backend] = faiss.read_index(str(out / VECTORS))
    xb = indexes["torch"].reconstruct_n(0, indexes["torch"].ntotal)
    xq = xb + np.random.default_rng(0).normal(0, 0.01, xb.shape).astype(np.float32)
    _, top_torch = indexes["torch"].search(xq, 1)
    _, top_onnx = indexes["onnx"].search(xq, 1)
    assert np.array_equal(top_torch, top_onnx)
    assert onnx_tower.agreement(indexes["onnx"].reconstruct_n(0, 40), xb)["cosine_min"] >= onnx_tower.COSINE_MIN


def test_backend_onnx_is_refused_on_ray(csv, tmp_path):
    from geoindex.errors import InvalidArgumentError
    from geoindex.pipeline.image_features import cache_features

    with pytest.raises(InvalidArgumentError, match="--backend onnx runs in this process, not on Ray"):
        cache_features(csv, tmp_path / "f", clip_model="tiny-test", device="cpu", ray="auto", backend="onnx")
