"""The reference GeoCLIP image path, rebuilt offline, to check geoindex's against (tests, benchmarks).

GeoCLIP's ``ImageEncoder`` (the ``geoclip`` package) embeds a photo as: transformers'
``CLIPImageProcessor`` -> ``CLIPModel.get_image_features`` -> its MLP head (the released
``image_encoder_mlp_weights.pth``) -> L2 normalisation (``GeoCLIP.forward``). The real CLIP
weights cannot be downloaded here, so both sides get the same random ones: a
:func:`clip_config` (GeoCLIP's own ViT-L/14 shape, or a small one for fast tests) saved with
``CLIPModel.save_pretrained``, which is what geoindex then reads as a checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geoindex.encoders.weights import IMAGE_HEAD_FILE, _geoclip_package_dir

# odd sizes: margins of both parities, a tall one past 4:1, a big one; plus a greyscale and an RGBA photo
PARITY_PHOTOS = (("rgb-299x201.jpg", (299, 201), "RGB"), ("rgb-225x1000.png", (225, 1000), "RGB"),
                 ("rgb-1023x769.jpg", (1023, 769), "RGB"), ("grey-640x427.jpg", (640, 427), "L"),
                 ("rgba-333x250.png", (333, 250), "RGBA"))


def kauai_png() -> Path:
    """The photo the geoclip package ships (images/Kauai.png, RGBA)."""
    return _geoclip_package_dir() / "images" / "Kauai.png"


def write_parity_photos(folder: str | Path, seed: int = 0) -> list[Path]:
    """Kauai.png and :data:`PARITY_PHOTOS` (textured random pictures written to ``folder``): paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = [kauai_png()]
    for name, (width, height), mode in PARITY_PHOTOS:
        coarse = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 4), dtype=np.uint8)
        fine = rng.integers(-40, 41, (height, width, 4))
        base = np.asarray(Image.fromarray(coarse, "RGBA").resize((width, height), Image.BILINEAR), dtype=np.int64)
        img = Image.fromarray(np.clip(base + fine, 0, 255).astype(np.uint8), "RGBA")
        img = img if mode == "RGBA" else img.convert(mode)
        path = folder / name
        img.save(path, quality=92) if path.suffix == ".jpg" else img.save(path)
        paths.append(path)
    return paths


def _import_torchvision() -> None:
    from geoindex.encoders.torchvision_compat import import_torchvision

    import_torchvision()  # transformers' image utilities import it


def clip_config(size: str = "vit-l-14"):
    """A transformers CLIPConfig: ``vit-l-14`` is GeoCLIP's own (``ImageEncoder(from_pretrained=False)``);
    ``small`` has 2 layers x 64 wide in both towers and the same 768-d projection (fast tests)."""
    _import_torchvision()
    from transformers import CLIPConfig

    if size == "vit-l-14":
        text = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12)
        vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)
    elif size == "small":
        text = dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_hidden_layers=2)
        vision = dict(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_hidden_layers=2)
    else:
        raise ValueError(f"clip_config size {size!r} is not vit-l-14 or small")
    return CLIPConfig(projection_dim=768, text_config=dict(text, projection_dim=768, bos_token_id=0, eos_token_id=2),
                      vision_config=dict(vision, patch_size=14, projection_dim=768))


def random_clip(size: str = "vit-l-14", seed: int = 0):
    """A transformers CLIPModel of :func:`clip_config` ``size`` with seeded random weights (eval mode)."""
    _import_torchvision()
    from transformers import CLIPModel

    config = clip_config(size)
    torch.manual_seed(seed)
    return CLIPModel(config).eval().requires_grad_(False)


def reference_head() -> torch.nn.Sequential:
    """GeoCLIP's ``ImageEncoder.mlp`` with the released weights (from the package, whatever
    $GEOINDEX_GEOCLIP_WEIGHTS says), as ``GeoCLIP`` loads them."""
    mlp = torch.nn.Sequential(torch.nn.Linear(768, 768), torch.nn.ReLU(), torch.nn.Linear(768, 512))
    path = _geoclip_package_dir() / "model" / "weights" / IMAGE_HEAD_FILE
    mlp.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return mlp.eval().requires_grad_(False)


def reference_embeddings(clip_model, paths: list[Path], batch_size: int = 8) -> np.ndarray:
    """(n, 512) float32, L2-normalised: the reference path on the photo files as PIL opens them
    (``CLIPImageProcessor`` converts modes itself: alpha composited on white, grey to RGB)."""
    _import_torchvision()
    from transformers import CLIPImageProcessor

    processor, head, out = CLIPImageProcessor(), reference_head(), []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            images = [Image.open(p) for p in paths[start : start + batch_size]]
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            feats = clip_model.get_image_features(pixel_values=pixels)
            feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
            out.append(torch.nn.functional.normalize(head(feats), dim=1).numpy())
    return np.concatenate(out).astype(np.float32)


def agreement(xa: np.ndarray, xb: np.ndarray) -> dict:
    """Row-wise cosine (min, mean) and the max absolute difference of two (n, d) arrays."""
    cos = (xa * xb).sum(1) / (np.linalg.norm(xa, axis=1) * np.linalg.norm(xb, axis=1))
    return {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "max_abs_diff": float(np.abs(xa - xb).max()), "n": int(len(xa))}
