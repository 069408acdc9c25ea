"""geoindex's photo embeddings equal the reference GeoCLIP path's, given the same CLIP weights.

The reference (geoindex.encoders.reference): CLIPImageProcessor -> CLIPModel.get_image_features ->
the released MLP head, built from transformers with random weights (no download). geoindex reads the
same weights as a transformers folder: through --clip-checkpoint, $GEOINDEX_CLIP_CHECKPOINT, or an
offline Hugging Face hub cache with no flag at all. Fast tests use a small CLIP; the full ViT-L/14
shape is the slow test (and benchmarks/bench_images.py).
"""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from geoindex.encoders import reference as ref
from geoindex.encoders.clip import load_image_encoder, resolve_checkpoint
from geoindex.encoders.hf_clip import hub_snapshot
from geoindex.encoders.images import CLIP_MEAN, CLIP_STD, ClipPreprocess, load_image, resized_size
from geoindex.encoders.torchvision_compat import import_torchvision
from geoindex.errors import WeightsNotFoundError

REPO = "models--openai--clip-vit-large-patch14"
import_torchvision()  # before transformers' image classes (see torchvision_compat)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(CLIPModel, its save_pretrained folder) of the small random CLIP."""
    model = ref.random_clip("small", seed=0)
    folder = tmp_path_factory.mktemp("clip") / "small-clip"
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return ref.write_parity_photos(tmp_path_factory.mktemp("photos"))


def _hub(root, folder, revision="0123abc", main=True):
    """An offline hub cache holding ``folder`` as openai/clip-vit-large-patch14 (symlinked files)."""
    snap = root / REPO / "snapshots" / revision
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).symlink_to(f)
    if main:
        (root / REPO / "refs").mkdir(parents=True, exist_ok=True)
        (root / REPO / "refs" / "main").write_text(revision)
    return snap


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """HF_HUB_CACHE at an empty tmp folder, HF_HUB_OFFLINE=1, no checkpoint variable."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("GEOINDEX_CLIP_CHECKPOINT", raising=False)
    return hub


def test_preprocessing_equals_clip_image_processor(photos):
    """Pixel for pixel, on every photo (RGBA Kauai.png, odd sizes, greyscale, alpha)."""
    from transformers import CLIPImageProcessor

    processor, ours = CLIPImageProcessor(), ClipPreprocess(224)
    for path in photos:
        theirs = processor(images=Image.open(path), return_tensors="pt")["pixel_values"][0]
        mine = ours(load_image(path))
        assert mine.shape == theirs.shape == (3, 224, 224) and mine.dtype == torch.float32
        assert float((mine - theirs).abs().max()) < 1e-5, path.name


def test_odd_margins_round_down_as_clip_image_processor_does(photos):
    """225x1000 resizes to 224x995: a margin of 771 rows. CLIPImageProcessor starts the crop at row
    int(771 / 2) = 385; torchvision's CenterCrop (open_clip's) rounds 385.5 half to even, to 386."""
    from transformers import CLIPImageProcessor

    assert resized_size(225, 1000, 224) == (224, 995) and resized_size(1023, 769, 224) == (297, 224)
    path = next(p for p in photos if "225x1000" in p.name)
    theirs = CLIPImageProcessor()(images=Image.open(path), return_tensors="pt")["pixel_values"][0]
    from torchvision.transforms.v2 import functional as tvf

    pixels = torch.from_numpy(np.asarray(load_image(path)).transpose(2, 0, 1).copy())
    resized = tvf.resize(pixels, [995, 224], interpolation=tvf.InterpolationMode.BICUBIC, antialias=True).float()
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1) * 255, torch.tensor(CLIP_STD).view(3, 1, 1) * 255
    floor = (resized[:, 385:609] - mean) / std
    half_even = (resized[:, 386:610] - mean) / std
    assert float((floor - theirs).abs().max()) < 1e-5
    assert float((half_even - theirs).abs().max()) > 0.1  # one row off is visible: the test can fail
    assert float((ClipPreprocess(224)(load_image(path)) - theirs).abs().max()) < 1e-5


def test_clip_checkpoint_folder_matches_reference(small, photos, monkeypatch):
    model, folder = small
    xr = ref.reference_embeddings(model, photos)
    enc = load_image_encoder("ViT-L-14", checkpoint=folder, device="cpu", batch_size=4)
    xq = enc.encode_images([load_image(p) for p in photos])
    agree = ref.agreement(xq, xr)
    assert agree["n"] == 6 and agree["cosine_min"] >= 0.9999, agree
    assert agree["max_abs_diff"] < 1e-4, agree
    monkeypatch.setenv("GEOINDEX_CLIP_CHECKPOINT", str(folder))  # the same weights, named by the variable
    again = load_image_encoder("ViT-L-14", device="cpu").encode_images([load_image(photos[0])])
    assert ref.agreement(again, xr[:1])["cosine_min"] >= 0.9999


def test_text_tower_reads_open_clip_tokens(small):
    """Text runs CLIPModel.get_text_features on open_clip's tokens (OpenAI's BPE, end-of-text the largest
    id, padded with 0). The reference tokenizer pads with end-of-text: the causal mask makes it equal."""
    model, folder = small
    enc = load_image_encoder("ViT-L-14", checkpoint=folder, device="cpu")
    texts = ["a beach with palm trees", "snowy mountains above a lake"]
    tokens = enc.tokenizer(texts)
    eot = int(tokens.max())
    padded = tokens.clone()
    for row in padded:
        end = int((row == eot).nonzero()[0])
        row[end + 1 :] = eot
    with torch.inference_mode():
        a = model.get_text_features(input_ids=tokens)
        b = model.get_text_features(input_ids=padded)
    a, b = (x if isinstance(x, torch.Tensor) else x.pooler_output for x in (a, b))
    head = ref.reference_head()
    xr = torch.nn.functional.normalize(head(b), dim=1).numpy()
    assert float((a - b).abs().max()) < 1e-5
    assert ref.agreement(enc.encode_texts(texts), xr)["cosine_min"] >= 0.9999


def test_hub_cache_is_used_with_no_flag(small, photos, offline_hub, caplog):
    model, folder = small
    snap = _hub(offline_hub, folder)
    assert resolve_checkpoint("ViT-L-14") == str(snap)
    with caplog.at_level(logging.WARNING, logger="geoindex.encoders.clip"):
        enc = load_image_encoder(device="cpu")
    lines = [r.getMessage() for r in caplog.records if "Hugging Face cache" in r.getMessage()]
    assert len(lines) == 1 and "no download" in lines[0] and str(snap) in lines[0]
    xr = ref.reference_embeddings(model, photos[:3])
    assert ref.agreement(enc.encode_images([load_image(p) for p in photos[:3]]), xr)["cosine_min"] >= 0.9999


def test_hub_cache_lookup_order(small, tmp_path, offline_hub, monkeypatch):
    _, folder = small
    assert hub_snapshot() is None  # empty cache
    with pytest.raises(WeightsNotFoundError, match="HF_HUB_OFFLINE.*--clip-checkpoint"):
        load_image_encoder(device="cpu")  # the fail-fast stays
    broken = offline_hub / REPO / "snapshots" / "aaa"  # an interrupted download: config, no weights
    broken.mkdir(parents=True)
    (broken / "config.json").write_text((folder / "config.json").read_text())
    assert hub_snapshot() is None
    snap = _hub(offline_hub, folder, revision="bbb", main=False)  # no refs/main: the complete snapshot
    assert hub_snapshot() == snap
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_snapshot() is None  # HF_HOME/hub is empty
    _hub(tmp_path / "home" / "hub", folder)
    assert hub_snapshot() == tmp_path / "home" / "hub" / REPO / "snapshots" / "0123abc"
    monkeypatch.setenv("GEOINDEX_CLIP_CHECKPOINT", "/given/file.pt")  # a checkpoint named wins over the cache
    assert resolve_checkpoint("ViT-L-14") == "/given/file.pt"
    assert resolve_checkpoint("ViT-L-14-random") is None  # random weights read nothing


def test_folder_errors(small, tmp_path):
    model, folder = small
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsNotFoundError, match="has no config.json with model.safetensors"):
        load_image_encoder("ViT-L-14", checkpoint=empty, device="cpu")
    narrow = tmp_path / "narrow"
    config = ref.clip_config("small")
    config.projection_dim = config.vision_config.projection_dim = config.text_config.projection_dim = 512
    from transformers import CLIPModel

    CLIPModel(config).save_pretrained(narrow)
    with pytest.raises(WeightsNotFoundError, match="512-d features.*ViT-L-14 gives 768-d"):
        load_image_encoder("ViT-L-14", checkpoint=narrow, device="cpu")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((folder / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(WeightsNotFoundError, match="could not be loaded"):
        load_image_encoder("ViT-L-14", checkpoint=broken, device="cpu")
    (broken / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(WeightsNotFoundError, match="without vision_config"):
        load_image_encoder("ViT-L-14", checkpoint=broken, device="cpu")


def test_train_features_read_a_transformers_folder(small, photos, tmp_path):
    from geoindex.train.features import FeatureCache, cache_features

    model, folder = small
    csv = tmp_path / "photos.csv"
    csv.write_text("IMG_FILE,LAT,LON\n" + "".join(f"{p},{10 + i},{20 + i}\n" for i, p in enumerate(photos[:3])))
    cache_features(csv, tmp_path / "feats", clip_model="ViT-L-14", clip_checkpoint=str(folder), device="cpu",
                   progress=False, workers=1)
    info = json.loads((tmp_path / "feats" / "features.json").read_text())
    assert info["clip_checkpoint"]["name"] == folder.name and info["clip_checkpoint"]["weights"] == "model.safetensors"
    cache = FeatureCache(tmp_path / "feats")
    from transformers import CLIPImageProcessor

    pixels = CLIPImageProcessor()(images=[Image.open(p) for p in photos[:3]], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        want = model.get_image_features(pixel_values=pixels)
    want = (want if isinstance(want, torch.Tensor) else want.pooler_output).numpy()
    got = cache.take(np.arange(3))
    assert ref.agreement(got, want)["cosine_min"] >= 0.9999  # float16 cache: cosine, not bits


@pytest.mark.slow  # a subprocess that imports torch and transformers: ~15 s
def test_locate_command_uses_the_hub_cache(small, photos, built_r2, tmp_path):
    """As a user runs it: no flag, an offline hub cache; JSON on stdout, the one log line on stderr."""
    _, folder = small
    _hub(tmp_path / "hub", folder)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    env.pop("GEOINDEX_CLIP_CHECKPOINT", None)
    code = "import sys\nfrom geoindex.cli.locate import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = subprocess.run([sys.executable, "-c", code, str(photos[0]), str(photos[2]), "--index", str(built_r2),
                           "--format", "json", "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert len(results) == 2 and all(r["predictions"] for r in results)
    assert sum("from the Hugging Face cache" in line for line in proc.stderr.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.nightly  # ~1.5-2.5 min of ViT-L/14 on 2 cores: out of CI (make test-nightly); the tiny-model parity runs there
def test_full_vit_l14_folder_and_hub_cache_match_reference(photos, tmp_path, monkeypatch):
    """The done-when: a random full-size ViT-L/14 written by CLIPModel.save_pretrained, as
    --clip-checkpoint and as openai/clip-vit-large-patch14 in an offline hub cache (~4 GB peak)."""
    import gc

    model = ref.random_clip("vit-l-14", seed=0)
    folder = tmp_path / "vit-l-14"
    model.save_pretrained(folder)
    xr = ref.reference_embeddings(model, photos)
    del model
    gc.collect()
    images = [load_image(p) for p in photos]
    enc = load_image_encoder("ViT-L-14", checkpoint=folder, device="cpu")
    agree = ref.agreement(enc.encode_images(images), xr)
    assert agree["cosine_min"] >= 0.9999 and agree["max_abs_diff"] < 1e-3, agree
    del enc
    gc.collect()
    _hub(tmp_path / "hub", folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("GEOINDEX_CLIP_CHECKPOINT", raising=False)
    agree = ref.agreement(load_image_encoder(device="cpu").encode_images(images), xr)
    assert agree["cosine_min"] >= 0.9999 and agree["max_abs_diff"] < 1e-3, agree
