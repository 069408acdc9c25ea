"""benchmarks/gpu_check.py runs before a GPU is at hand: a dry run on the CPU, and 'not run' without CUDA."""

import json
import sys

import torch

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402


def test_dry_run_exercises_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["status"].startswith("dry run") and result["device"] == "cpu"
    assert [r["batch"] for r in result["tower"]["rows"]] == [2, 4] and result["tower"]["status"] == "run"
    assert all(r["photos_per_s"] > 0 for r in result["tower"]["rows"])
    assert result["search"]["status"] == "run" and result["search"]["gallery"] == 2000
    if result["search"]["faiss_cpu"]["status"] == "run":  # fp32 on the CPU: the same top-10 as FAISS
        assert result["search"]["faiss_cpu"]["gpu_fp16_recall_at_10"] == 1.0
    assert result["archive"]["status"] == "skipped"


def test_the_tower_is_the_vit_l14_shape():
    with torch.device("meta"):  # shapes only: no 1.2 GB of random weights
        model = gpu_check.vit(gpu_check.VIT_L14)
    params = sum(p.numel() for p in model.parameters())
    assert 300e6 < params < 310e6  # CLIP ViT-L/14's image tower (303M) + GeoCLIP's head (1M)
    tiny = gpu_check.vit(gpu_check.TINY)
    with torch.inference_mode():
        out = tiny(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, 512) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_without_cuda_it_says_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    gpu_check.main(["--out", str(out)])
    result = json.loads(out.read_text())
    assert result["status"] == "not run" and "no CUDA device" in result["reason"]
    assert "tower" not in result and "search" not in result
