"""Images and text -> GeoCLIP embeddings: open_clip CLIP tower + GeoCLIP's pretrained MLP head.

GeoCLIP was trained on OpenAI's CLIP ViT-L/14 image features (768-d projections) followed by an
MLP 768 -> 768 -> 512 whose pretrained weights ship in the ``geoclip`` package. The text tower of
the same CLIP projects into the same 768-d space, so text goes through the same head (the paper's
text-to-GPS demo). Outputs are (n, 512) float32, L2-normalised, comparable with the location
vectors in an index.

Models are named and resolved here (:data:`CLIP_MODELS`): ``ViT-L-14`` (the real one) and
``tiny-test`` (a randomly initialised 2-layer CLIP with the same 768-d output, for offline tests;
its predictions are meaningless).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geoindex.encoders.images import crop_to_aspect
from geoindex.encoders.location import pick_device
from geoindex.encoders.weights import check_download_possible, geoclip_files
from geoindex.errors import InvalidArgumentError, InvalidQueryError, MissingDependencyError, WeightsNotFoundError

log = logging.getLogger(__name__)

CHECKPOINT_ENV = "GEOINDEX_CLIP_CHECKPOINT"
CLIP_DIM = 768
MAX_TEXT_CHARS = 1000


@dataclass(frozen=True)
class ClipSpec:
    open_clip_name: str
    pretrained: str | None  # open_clip pretrained tag; None = random init (tests)
    description: str


CLIP_MODELS = {
    "ViT-L-14": ClipSpec("ViT-L-14", "openai", "OpenAI CLIP ViT-L/14, GeoCLIP's backbone"),
    "tiny-test": ClipSpec("geoindex-tiny", None, "tiny random CLIP for offline tests (meaningless output)"),
    "ViT-L-14-random": ClipSpec("ViT-L-14", None, "ViT-L/14 shape, random weights: real compute for timing, "
                                "meaningless output"),
}


def _open_clip():
    from geoindex.encoders.torchvision_compat import import_torchvision

    try:
        import_torchvision()  # open_clip's transforms; see torchvision_compat for CPU-only torch
        import open_clip
    except ImportError as e:
        raise MissingDependencyError("image and text queries need open_clip: run `pip install open_clip_torch`") from e
    open_clip.add_model_config(Path(__file__).parent / "clip_configs")
    return open_clip


def load_geoclip_head() -> nn.Sequential:
    """GeoCLIP's image MLP head (768 -> 768 -> 512) with its pretrained weights."""
    head = nn.Sequential(nn.Linear(CLIP_DIM, CLIP_DIM), nn.ReLU(), nn.Linear(CLIP_DIM, 512))
    state = torch.load(geoclip_files().image_head, map_location="cpu", weights_only=True)
    head.load_state_dict(state)
    return head.eval().requires_grad_(False)


def validate_texts(texts: list[str]) -> None:
    """Each text non-empty and at most MAX_TEXT_CHARS; InvalidQueryError names the first bad one."""
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InvalidQueryError(f"text query {i} is empty: give a description such as 'a beach with palm trees'")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidQueryError(
                f"text query {i} has {len(text)} characters, over {MAX_TEXT_CHARS}: CLIP reads 77 tokens; shorten it"
            )


class ImageEncoder:
    """CLIP + GeoCLIP head. Use :func:`load_image_encoder` to build one."""

    def __init__(self, name: str, clip: nn.Module, preprocess, tokenizer, head: nn.Module,
                 device: torch.device, dtype: torch.dtype, batch_size: int = 16):
        self.name = name
        self.clip = clip
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.head = head
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size

    def _project(self, feats: torch.Tensor) -> np.ndarray:
        out = self.head(feats.float())
        return torch.nn.functional.normalize(out, dim=1).cpu().numpy().astype(np.float32)

    def encode_images(self, images: list) -> np.ndarray:
        """RGB PIL images -> (n, 512) float32, L2-normalised. Batched; fp16 autocast on CUDA.
        Images wider (or taller) than MAX_ASPECT are cropped to their centre first: CLIP keeps
        only the central square anyway, and the crop bounds what its resize allocates."""
        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(images), self.batch_size):
                part = images[start : start + self.batch_size]
                batch = torch.stack([self.preprocess(crop_to_aspect(im)) for im in part])
                feats = self.clip.encode_image(batch.to(self.device))
                out.append(self._project(feats))
        return np.concatenate(out) if out else np.empty((0, 512), np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> (n, 512) float32, L2-normalised (CLIP text tower + the same head)."""
        validate_texts(texts)
        out = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(texts[start : start + self.batch_size]).to(self.device)
                out.append(self._project(self.clip.encode_text(tokens)))
        return np.concatenate(out) if out else np.empty((0, 512), np.float32)

    def _autocast(self):
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return torch.autocast("cpu", enabled=False)


def load_image_encoder(model: str = "ViT-L-14", checkpoint: str | Path | None = None, device: str = "auto",
                       precision: str | None = None, batch_size: int = 16) -> ImageEncoder:
    """Build the image/text encoder.

    ``checkpoint``: a local open_clip/OpenAI ViT-L/14 checkpoint file (else ``$GEOINDEX_CLIP_CHECKPOINT``,
    else open_clip downloads OpenAI's weights into its cache). ``precision``: ``fp32`` or ``fp16``;
    default fp16 on CUDA, fp32 on CPU (half precision is refused on CPU).
    """
    if model not in CLIP_MODELS:
        raise InvalidArgumentError(f"CLIP model {model!r} is not one of {sorted(CLIP_MODELS)}: use ViT-L-14")
    spec = CLIP_MODELS[model]
    dev = pick_device(device)
    precision = precision or ("fp16" if dev.type == "cuda" else "fp32")
    dtypes = {"fp32": torch.float32, "fp16": torch.float16}
    if precision not in dtypes:
        raise InvalidArgumentError(f"precision {precision!r} is not fp32 or fp16")
    if precision != "fp32" and dev.type != "cuda":
        raise InvalidArgumentError(f"precision {precision!r} needs CUDA: use fp32 on the CPU")
    open_clip = _open_clip()
    checkpoint = checkpoint or os.environ.get(CHECKPOINT_ENV) or None
    if spec.pretrained is None:
        torch.manual_seed(0)  # the tiny test model is random but reproducible
        clip, _, preprocess = open_clip.create_model_and_transforms(spec.open_clip_name, pretrained=None)
    else:
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise WeightsNotFoundError(
                f"CLIP checkpoint {str(checkpoint)!r} does not exist: pass the path of a ViT-L-14 OpenAI "
                f"checkpoint (--clip-checkpoint or ${CHECKPOINT_ENV}), or unset it to let open_clip download one"
            )
        source = str(checkpoint) if checkpoint else spec.pretrained
        try:
            if checkpoint is None:  # fail in seconds, not after the hub client's minute of retries
                check_download_possible(open_clip.get_pretrained_cfg(spec.open_clip_name, spec.pretrained))
            clip, _, preprocess = open_clip.create_model_and_transforms(spec.open_clip_name, pretrained=source)
        except Exception as e:  # network, hub, or file-format failures all mean "no weights"
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsNotFoundError(
                f"CLIP {model} weights could not be loaded from {source!r} ({reason}). open_clip downloads "
                f"OpenAI's ViT-L/14 on first use, which needs internet access; offline, pass "
                f"--clip-checkpoint PATH or set {CHECKPOINT_ENV}=PATH to a local ViT-L-14 checkpoint"
            ) from e
    tokenizer = open_clip.get_tokenizer(spec.open_clip_name)
    clip = clip.to(dev).eval().requires_grad_(False)
    head = load_geoclip_head().to(dev)
    return ImageEncoder(model, clip, preprocess, tokenizer, head, dev, dtypes[precision], batch_size)
