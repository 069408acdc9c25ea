"""Images and text -> GeoCLIP embeddings: open_clip CLIP tower + GeoCLIP's pretrained MLP head.

GeoCLIP was trained on OpenAI's CLIP ViT-L/14 image features (768-d projections) followed by an
MLP 768 -> 768 -> 512 whose pretrained weights ship in the ``geoclip`` package. The text tower of
the same CLIP projects into the same 768-d space, so text goes through the same head (the paper's
text-to-GPS demo). Outputs are (n, 512) float32, L2-normalised, comparable with the location
vectors in an index.

Models are named and resolved here (:data:`CLIP_MODELS`): ``ViT-L-14`` (the real one) and
``tiny-test`` (a randomly initialised 2-layer CLIP with the same 768-d output, for offline tests;
its predictions are meaningless). Weights for ViT-L-14 come from, in order: ``checkpoint``
(``--clip-checkpoint``), ``$GEOINDEX_CLIP_CHECKPOINT``, open_clip's cache, the Hugging Face hub
cache's ``openai/clip-vit-large-patch14`` (what GeoCLIP itself downloads), then an open_clip
download. A checkpoint is an open_clip/OpenAI file or a transformers CLIP folder (see hf_clip).
Every image goes through :class:`~geoindex.encoders.images.ClipPreprocess`, pixel-equal to the
reference's ``CLIPImageProcessor``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geoindex.encoders import hf_clip, onnx_tower
from geoindex.encoders.images import ClipPreprocess, crop_to_aspect
from geoindex.encoders.location import pick_device
from geoindex.encoders.weights import check_download_possible, clip_model_for, geoclip_files, open_clip_cached
from geoindex.errors import BackendError, InvalidArgumentError, InvalidQueryError, MissingDependencyError, WeightsNotFoundError

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


def make_head(width: int, hidden: int | None = None) -> nn.Sequential:
    """GeoCLIP's image MLP head shape for CLIP features of ``width``: width -> hidden -> 512
    (the released head: 768 -> 768 -> 512)."""
    hidden = hidden or width
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 512))


def load_geoclip_head(weights: str | Path | None = None) -> nn.Sequential:
    """GeoCLIP's image MLP head with the weights in use (its input width read from the file)."""
    path = geoclip_files(weights).image_head
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        hidden, width = state["0.weight"].shape
        head = make_head(int(width), int(hidden))
        head.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise WeightsNotFoundError(
            f"{path} is not a GeoCLIP image head (Linear, ReLU, Linear to 512): {e}; "
            "point --weights at a folder `geoindex-train fit` wrote"
        ) from e
    return head.eval().requires_grad_(False)


def head_width(head: nn.Sequential) -> int:
    """The CLIP feature width a head takes."""
    return int(head[0].in_features)


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
        self.backend = "torch"  # or "onnx" (ONNX Runtime on the CPU, self.tower): see onnx_tower.attach
        self.tower = None
        self.int8_tower = None  # precision int8: the quantized graph, until int8_check.guard switches to it
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
                if self.tower is not None:
                    out.append(self.tower(batch.numpy()))
                    continue
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
        return autocast(self.device, self.dtype)


def autocast(device: torch.device, dtype: torch.dtype):
    """Half-precision autocast on CUDA (``dtype`` fp16), a no-op context anywhere else or for fp32."""
    if device.type == "cuda" and dtype != torch.float32:
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def clip_spec(model: str) -> ClipSpec:
    """A name from :data:`CLIP_MODELS`, or any open_clip backbone as ``ARCH:TAG`` (``ViT-B-16:openai``;
    ``ARCH:random`` for random weights). InvalidArgumentError names the fix."""
    if model in CLIP_MODELS:
        return CLIP_MODELS[model]
    arch, sep, tag = model.partition(":")
    if not sep or not arch or not tag:
        raise InvalidArgumentError(
            f"CLIP model {model!r} is not one of {sorted(CLIP_MODELS)} nor an open_clip ARCH:TAG "
            "such as ViT-B-16:openai: use ViT-L-14 (GeoCLIP's backbone)"
        )
    open_clip = _open_clip()
    if arch not in open_clip.list_models():
        raise InvalidArgumentError(f"CLIP model {model!r}: open_clip has no architecture {arch!r} "
                                   "(open_clip.list_models() lists them)")
    if tag == "random":
        return ClipSpec(arch, None, f"open_clip {arch}, random weights")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        raise InvalidArgumentError(f"CLIP model {model!r}: open_clip has no weights {tag!r} for {arch} "
                                   f"(it has {sorted(tags) or 'none'}; or use {arch}:random)")
    return ClipSpec(arch, tag, f"open_clip {arch} ({tag})")


def clip_width(model: str) -> int:
    """The width of ``model``'s image features (768 for ViT-L-14), from its open_clip config."""
    config = _open_clip().get_model_config(clip_spec(model).open_clip_name)
    return int(config["embed_dim"])


def resolve_checkpoint(model: str, checkpoint: str | Path | None = None) -> str | None:
    """The local weights :func:`load_clip` will read for ``model``: ``checkpoint``, else
    ``$GEOINDEX_CLIP_CHECKPOINT``, else (ViT-L-14 with open_clip's cache empty) the hub cache's
    ``openai/clip-vit-large-patch14`` snapshot folder. None: open_clip's cache or its download
    (and always for random-weight models, which read nothing)."""
    spec = clip_spec(model)
    if spec.pretrained is None:
        return None
    given = checkpoint or os.environ.get(CHECKPOINT_ENV) or None
    if given is not None:
        return str(given)
    if (spec.open_clip_name, spec.pretrained) != ("ViT-L-14", "openai"):
        return None
    if open_clip_cached(_open_clip().get_pretrained_cfg(spec.open_clip_name, spec.pretrained)):
        return None
    snapshot = hf_clip.hub_snapshot(hf_clip.OPENAI_VIT_L_14)
    return str(snapshot) if snapshot is not None else None


def load_clip(model: str = "ViT-L-14", checkpoint: str | Path | None = None, device: torch.device | None = None):
    """The frozen CLIP model alone: (clip, preprocess, tokenizer) on ``device``.

    ``checkpoint``: local weights for ``model``, an open_clip/OpenAI checkpoint file or a
    transformers CLIP folder (else see :func:`resolve_checkpoint`; with nothing local open_clip
    downloads the weights, failing in seconds when it cannot). ``preprocess``: PIL image ->
    (3, 224, 224) float32 (:class:`ClipPreprocess`); ``clip.encode_image``: pixels -> (n, 768)."""
    spec = clip_spec(model)
    dev = device or torch.device("cpu")
    open_clip = _open_clip()
    tokenizer = open_clip.get_tokenizer(spec.open_clip_name)
    if spec.pretrained is None:
        torch.manual_seed(0)  # random test models are reproducible
        clip = open_clip.create_model(spec.open_clip_name, pretrained=None)
        return _ready(clip, dev), ClipPreprocess(_image_size(clip)), tokenizer
    source = resolve_checkpoint(model, checkpoint)
    if source is not None and hf_clip.is_hf_folder(source):
        return _load_hf(model, Path(source), checkpoint, dev), ClipPreprocess(224), tokenizer
    if source is not None and not Path(source).is_file():
        what = ("has no config.json with model.safetensors or pytorch_model.bin" if Path(source).is_dir()
                else "does not exist")
        raise WeightsNotFoundError(
            f"CLIP checkpoint {source!r} {what}: pass a {model} checkpoint file or a transformers CLIP folder "
            f"(--clip-checkpoint or ${CHECKPOINT_ENV}), or unset it to let open_clip download one"
        )
    try:
        if source is None:  # fail in seconds, not after the hub client's minute of retries
            check_download_possible(open_clip.get_pretrained_cfg(spec.open_clip_name, spec.pretrained))
        clip = open_clip.create_model(spec.open_clip_name, pretrained=source or spec.pretrained)
    except Exception as e:  # network, hub, or file-format failures all mean "no weights"
        raise _no_weights(model, source or spec.pretrained, e) from e
    return _ready(clip, dev), ClipPreprocess(_image_size(clip)), tokenizer


def _no_weights(model: str, source: str, e: Exception) -> WeightsNotFoundError:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return WeightsNotFoundError(
        f"CLIP {model} weights could not be loaded from {source!r} ({reason}). open_clip "
        f"downloads them on first use, which needs internet access; offline, pass --clip-checkpoint PATH or "
        f"set {CHECKPOINT_ENV}=PATH to a local {model} checkpoint (an open_clip file or a transformers folder), "
        f"or put {hf_clip.OPENAI_VIT_L_14} in the Hugging Face cache")


def require_clip_weights(model: str | None = None, checkpoint: str | Path | None = None,
                         weights: str | Path | None = None) -> None:
    """Raise :class:`WeightsNotFoundError` at once when :func:`load_clip` would find no local weights
    and could not download them (the local caches first, then a short connect probe): a server
    calls this before it loads its index, so that absent weights are refused in seconds."""
    model = clip_model_for(model, geoclip_files(weights))
    spec = clip_spec(model)
    if spec.pretrained is None or resolve_checkpoint(model, checkpoint) is not None:
        return  # random weights, or a local path (load_clip says what is wrong with it)
    try:
        check_download_possible(_open_clip().get_pretrained_cfg(spec.open_clip_name, spec.pretrained))
    except OSError as e:
        raise _no_weights(model, spec.pretrained, e) from e


def _ready(clip: nn.Module, device: torch.device) -> nn.Module:
    return clip.to(device).eval().requires_grad_(False)


def _image_size(clip: nn.Module) -> int:
    size = getattr(clip.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _load_hf(model: str, folder: Path, checkpoint, device: torch.device) -> nn.Module:
    """A transformers CLIP folder, checked to give ``model``'s feature width; one log line says which."""
    width, expected = hf_clip.projection_dim(folder), clip_width(model)
    if width != expected:
        raise WeightsNotFoundError(
            f"CLIP folder {str(folder)!r} gives {width}-d features ({hf_clip.describe(folder)}), but {model} gives "
            f"{expected}-d: pass {model}'s weights ({hf_clip.OPENAI_VIT_L_14} for ViT-L-14)"
        )
    if checkpoint or os.environ.get(CHECKPOINT_ENV):
        log.info("CLIP %s: transformers weights %s (%s)", model, folder, hf_clip.describe(folder))
    else:  # shown at the commands' default level: the user learns where the weights came from
        log.warning("CLIP %s: using %s from the Hugging Face cache, %s (no download; %s)", model,
                    hf_clip.OPENAI_VIT_L_14, folder, hf_clip.describe(folder))
    return _ready(hf_clip.load_hf_clip(folder), device)


def load_image_encoder(model: str | None = None, checkpoint: str | Path | None = None, device: str = "auto",
                       precision: str | None = None, batch_size: int = 16,
                       weights: str | Path | None = None, backend: str = "auto") -> ImageEncoder:
    """Build the image/text encoder: an open_clip CLIP tower and GeoCLIP's image head.

    Args:
        model: the CLIP backbone (default: the one ``weights`` was trained on, else ViT-L-14
            with OpenAI's weights); ``tiny-test`` for tests, or any open_clip ``ARCH:TAG``.
        checkpoint: a local checkpoint file, or a transformers CLIP folder
            (``CLIPModel.save_pretrained``, a hub-cache snapshot), for it; else
            ``$GEOINDEX_CLIP_CHECKPOINT``, open_clip's cache, the Hugging Face cache's
            ``openai/clip-vit-large-patch14``, then open_clip's download (see :func:`load_clip`).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``fp16`` or ``int8``; default fp16 on CUDA, fp32 on CPU (half
            precision is refused on CPU). ``int8`` (ONNX Runtime, CPU) leaves the encoder on fp32
            with ``int8_tower`` beside it: :func:`geoindex.locate.int8_check.guard` switches after
            its self-check on the index in use.
        batch_size: images or texts per forward pass.
        weights: a GeoCLIP weights folder (``--weights``; default the released weights).
        backend: the image tower's runtime: ``auto`` (torch on CUDA; on the CPU, ONNX Runtime when
            it was measured faster than torch at export), ``torch`` or ``onnx`` (see
            :mod:`geoindex.encoders.onnx_tower`). Texts always run in torch.

    Returns:
        An :class:`ImageEncoder`: ``encode_images(images)`` and ``encode_texts(texts)`` give
        (n, 512) float32 L2-normalised GeoCLIP embeddings.

    Raises:
        WeightsNotFoundError: the CLIP or GeoCLIP weights cannot be loaded (offline without a
            checkpoint fails within seconds, saying how to fix it).
        InvalidArgumentError: a bad precision, or a backbone whose width is not the head's.
    """
    files = geoclip_files(weights)
    if model and files.clip_model and model != files.clip_model:
        log.warning("CLIP model %s asked for, but the head in %s was trained on %s features: its answers are only "
                    "meaningful with that backbone (leave --clip-model out to use it)", model, files.source,
                    files.clip_model)
    model = clip_model_for(model, files)
    clip_spec(model)  # a bad name fails before anything loads
    dev = pick_device(device)
    onnx_tower.choose(backend, dev)  # a bad backend fails before anything loads
    precision = precision or ("fp16" if dev.type == "cuda" else "fp32")
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.float32}
    if precision not in dtypes:
        raise InvalidArgumentError(f"precision {precision!r} is not fp32, fp16 or int8")
    if precision == "fp16" and dev.type != "cuda":
        raise InvalidArgumentError(f"precision {precision!r} needs CUDA: use fp32 on the CPU")
    if precision == "int8" and onnx_tower.choose(backend, dev) != "onnx":
        raise InvalidArgumentError(f"--precision int8 is ONNX Runtime's, on the CPU: use --backend onnx (or auto) "
                                   f"and --device cpu, not --backend {backend} on {dev}")
    head = load_geoclip_head(weights)
    width = clip_width(model)
    if head_width(head) != width:
        raise InvalidArgumentError(
            f"CLIP model {model!r} gives {width}-d features but the GeoCLIP head in {files.source} takes "
            f"{head_width(head)}-d: use the backbone the head was trained on"
            + (f" ({files.clip_model})" if files.clip_model else " (ViT-L-14)")
            + f", or train a head for it (`geoindex-train features --clip-model {model}`, then `fit --new-head`)"
        )
    clip, preprocess, tokenizer = load_clip(model, checkpoint, dev)
    encoder = ImageEncoder(model, clip, preprocess, tokenizer, head.to(dev), dev, dtypes[precision], batch_size)
    onnx_tower.attach(encoder, "onnx" if precision == "int8" else backend)  # int8 is a graph of ONNX Runtime's
    if precision == "int8":  # used only after int8_check.guard on the index in use
        from geoindex.encoders import onnx_int8

        if encoder.tower is None:
            raise BackendError(f"--precision int8 quantizes the ONNX export of {model}, which failed (see the warning "
                               "above): use --precision fp32")
        encoder.int8_tower = onnx_int8.int8_tower(encoder.tower)
    return encoder
