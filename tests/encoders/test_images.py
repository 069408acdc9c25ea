"""Image reading (modes, EXIF, damaged files, bombs) and the CLIP + GeoCLIP head encoder."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from geoindex.encoders.clip import load_image_encoder
from geoindex.encoders.images import load_image, to_rgb
from geoindex.errors import (
    ImageTooLargeError,
    InvalidArgumentError,
    InvalidImageError,
    InvalidQueryError,
    WeightsNotFoundError,
)
from tests.helpers.images import png_header_only


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny():
    return load_image_encoder("tiny-test", batch_size=3)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = load_image(_bytes(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    top = np.asarray(out)[2, 10]
    assert top[2] > 200 and top[0] < 60  # the blue half is now on top


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "1", "I", "F", "YCbCr", "I;16"])
def test_every_mode_becomes_rgb(mode):
    base = Image.new("RGB", (16, 8), (200, 100, 50))
    img = base.convert(mode) if mode not in ("I;16",) else Image.new("I;16", (16, 8), 30000)
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (16, 8)


def test_16_bit_is_scaled_not_clipped():
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    out = np.asarray(to_rgb(img))[0, :, 0]
    assert out.tolist() == [0, 128, 255]  # a plain convert("RGB") would clip 32768 to 255


def test_transparency_composites_on_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image(_bytes(img, "PNG")))[0, 0].tolist() == [255, 255, 255]
    pal = Image.new("P", (4, 4), 0)
    pal.info["transparency"] = 0
    assert to_rgb(pal).getpixel((0, 0)) == (255, 255, 255)


def test_truncated_jpeg():
    data = _bytes(Image.effect_noise((256, 256), 50).convert("RGB"), "JPEG")
    with pytest.raises(InvalidImageError, match="truncated|damaged"):
        load_image(data[: len(data) // 2], name="half.jpg")


@pytest.mark.parametrize("data,match", [(b"", "empty"), (b"%PDF-1.4 not an image", "not an image")])
def test_not_images(data, match):
    with pytest.raises(InvalidImageError, match=match):
        load_image(data)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidImageError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageTooLargeError, match="pixels"):
        load_image(png_header_only(100_000, 100_000), name="bomb.png")
    with pytest.raises(ImageTooLargeError, match="over the limit of 100"):
        load_image(_bytes(Image.new("RGB", (20, 20)), "PNG"), max_pixels=100)


def test_tiny_encoder_is_deterministic_normalised_and_batch_invariant(tiny):
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (50 + 10 * i, 70, 3), dtype=np.uint8)) for i in range(5)]
    a = tiny.encode_images(imgs)  # batches of 3 + 2
    b = np.concatenate([tiny.encode_images([im]) for im in imgs])
    assert a.shape == (5, 512) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.abs(a - b).max() < 1e-5
    again = load_image_encoder("tiny-test").encode_images(imgs[:1])
    assert np.abs(again - a[:1]).max() < 1e-6
    assert not np.allclose(a[0], a[1])


def test_aspect_ratio_bomb_is_cropped_before_clip_resizes_it(tiny):
    """A 92-byte PNG of 100000x1 pixels: CLIP's resize would make it 22,400,000x224 pixels. The
    encoder crops it to its central 20:1 first; up to 20:1 nothing is cropped (the pixels stay
    the reference's), and what the model sees of a cropped image is what it would have seen of the
    uncropped one (CLIP keeps the central square) up to a sub-pixel resampling shift."""
    buf = io.BytesIO()
    Image.new("1", (100_000, 1)).save(buf, "PNG")
    assert len(buf.getvalue()) < 200
    img = load_image(buf.getvalue())
    seen = []
    preprocess = tiny.preprocess
    tiny.preprocess = lambda im: (seen.append(im.size), preprocess(im))[1]
    try:
        xq = tiny.encode_images([img, Image.new("RGB", (30, 900), (10, 200, 30)), Image.new("RGB", (400, 20))])
    finally:
        tiny.preprocess = preprocess
    assert seen == [(20, 1), (30, 600), (400, 20)]  # wide: cropped to 20:1; 1:30 cropped; 20:1 untouched
    assert np.isfinite(xq).all() and np.allclose(np.linalg.norm(xq, axis=1), 1, atol=1e-5)
    rng = np.random.default_rng(4)
    wide = Image.fromarray(rng.integers(0, 255, (100, 4000, 3), dtype=np.uint8))  # 40:1, resized by 0.64
    direct = tiny.preprocess(wide)  # crops inside too: compare with the resize of the whole image
    whole = _preprocess_uncropped(tiny.preprocess, wide)
    assert direct.shape == whole.shape and float((direct - whole).abs().max()) < 1e-5


def _preprocess_uncropped(preprocess, img):
    import geoindex.encoders.images as images

    saved = images.MAX_ASPECT
    images.MAX_ASPECT = 1e9
    try:
        return preprocess(img)
    finally:
        images.MAX_ASPECT = saved


def test_text_queries(tiny):
    t = tiny.encode_texts(["a beach with palm trees and colonial houses", "snowy mountains"])
    assert t.shape == (2, 512) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert not np.allclose(t[0], t[1])
    with pytest.raises(InvalidQueryError, match="empty"):
        tiny.encode_texts(["  "])
    with pytest.raises(InvalidQueryError, match="characters"):
        tiny.encode_texts(["x" * 5000])


@pytest.mark.slow
def test_encoder_loading_errors(tmp_path):
    with pytest.raises(InvalidArgumentError, match="ViT-L-14"):
        load_image_encoder("ResNet-9000")
    with pytest.raises(WeightsNotFoundError, match="--clip-checkpoint"):
        load_image_encoder("ViT-L-14", checkpoint=tmp_path / "missing.pt")
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsNotFoundError, match="could not be loaded"):
        load_image_encoder("ViT-L-14", checkpoint=bad)
    with pytest.raises(InvalidArgumentError, match="CUDA"):
        load_image_encoder("tiny-test", device="cpu", precision="fp16")


def test_weights_error_keeps_the_whole_reason(monkeypatch):
    """The loader's reason is quoted whole (the hub's sentences run past 200 characters)."""
    from geoindex.encoders.clip import _open_clip

    open_clip = _open_clip()  # through the torchvision shim, as the encoder imports it

    reason = "Failed to download weights: " + "the hub said why at length " * 12 + "and ends here."

    def offline(*args, **kwargs):
        raise RuntimeError(reason + "\nsecond line")

    monkeypatch.setattr(open_clip, "create_model", offline)
    monkeypatch.setattr("geoindex.encoders.clip.check_download_possible", lambda cfg: None)  # as if online
    with pytest.raises(WeightsNotFoundError) as e:
        load_image_encoder("ViT-L-14", device="cpu")
    assert reason in str(e.value) and "second line" not in str(e.value) and "--clip-checkpoint" in str(e.value)


@pytest.mark.slow
def test_no_download_possible_gives_the_fix():
    """The real path: open_clip's download of OpenAI ViT-L/14, offline -> a clear one-line error."""
    code = ("from geoindex.encoders.clip import load_image_encoder\n"
            "try:\n    load_image_encoder('ViT-L-14')\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("GEOINDEX_CLIP_CHECKPOINT", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300).stdout
    assert out.startswith("WeightsNotFoundError") and "GEOINDEX_CLIP_CHECKPOINT" in out


def _offline_env(tmp_path, **extra):
    """No cached weights, no HF_HUB_OFFLINE, and a hub that refuses connections (port 9 on loopback):
    offline as a user's machine is, whatever network the test machine has."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:9",
           **extra}
    for name in ("HF_HUB_OFFLINE", "GEOINDEX_CLIP_CHECKPOINT", "HTTPS_PROXY", "https_proxy"):
        env.pop(name, None)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "geolocate"])
def test_offline_without_weights_fails_in_seconds(tmp_path, built_r2, command):
    """Without HF_HUB_OFFLINE the hub client retried for over a minute before the error; now the
    download's host is probed first (3 s at most) and the same message comes at once."""
    import time

    argv = (["geoindex-serve", "--index", str(built_r2)] if command == "serve"
            else ["geolocate", "--index", str(built_r2), "--text", "a harbour"])
    module = "geoindex.cli.serve" if command == "serve" else "geoindex.cli.locate"
    code = f"import sys\nfrom {module} import main\nsys.exit(main({argv[1:]!r}))\n"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_offline_env(tmp_path),
                          timeout=120)
    elapsed = time.perf_counter() - start
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "127.0.0.1:9 unreachable" in line and "--clip-checkpoint" in line, line
    assert elapsed < 20, f"{command} took {elapsed:.1f} s to say the weights cannot be had"


def test_download_probe_times_out_and_trusts_the_cache(monkeypatch):
    import socket
    import time

    from geoindex.encoders.weights import check_download_possible

    cfg = {"hf_hub": "timm/vit_large_patch14_clip_224.openai/", "url": "https://example.invalid/ViT-L-14.pt"}
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    def never_answers(*args, **kwargs):
        time.sleep(5)
        raise OSError("gave up")

    monkeypatch.setattr(socket, "create_connection", never_answers)  # a host that never answers
    start = time.perf_counter()
    with pytest.raises(OSError, match="did not answer in 0.2 s"):
        check_download_possible(cfg, timeout_s=0.2)
    assert time.perf_counter() - start < 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE is set"):
        check_download_possible(cfg)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, name: f"/cache/{repo}/{name}")
    assert check_download_possible(cfg) is None  # cached: no probe, no error
