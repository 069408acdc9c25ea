"""CLIP weights in Hugging Face transformers format: a folder, or the hub cache the user already has.

A transformers CLIP folder holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``),
as ``CLIPModel.save_pretrained`` writes it and as the hub cache's snapshot folders
(``models--openai--clip-vit-large-patch14/snapshots/<rev>/``) hold it. Such weights run in
transformers' own ``CLIPModel``: the reference GeoCLIP ``ImageEncoder`` runs that very class, so
geoindex's features equal the reference's to float rounding (measured in docs/photos-parity.md).

Nothing here downloads: the hub cache is read as files, whatever ``HF_HUB_OFFLINE`` says.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from geoindex.errors import MissingDependencyError, WeightsNotFoundError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
OPENAI_VIT_L_14 = "openai/clip-vit-large-patch14"  # the repo GeoCLIP's ImageEncoder loads


def is_hf_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder with a transformers config and weights."""
    folder = Path(path)
    return folder.is_dir() and (folder / CONFIG_FILE).is_file() and any((folder / n).is_file() for n in WEIGHT_FILES)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (as huggingface_hub resolves it):
    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
    ``~/.cache/huggingface/hub``."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hub_snapshot(repo_id: str = OPENAI_VIT_L_14, cache: Path | None = None) -> Path | None:
    """The cached snapshot folder of ``repo_id`` that holds a config and weights, or None.

    The revision ``refs/main`` names comes first; otherwise the most recently written complete
    snapshot (a cache filled by ``from_pretrained(..., revision=...)`` has no refs/main)."""
    repo = (cache or hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    main = repo / "refs" / "main"
    if main.is_file():
        pinned = snapshots / main.read_text().strip()
        if is_hf_folder(pinned):
            return pinned
    complete = [s for s in snapshots.iterdir() if is_hf_folder(s)]
    return max(complete, key=lambda s: s.stat().st_mtime) if complete else None


def read_config(folder: Path) -> dict:
    """The folder's config.json as a dict; WeightsNotFoundError when it is not a CLIP config."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise WeightsNotFoundError(f"{folder / CONFIG_FILE} is not readable JSON ({e}): copy the folder again") from e
    if not isinstance(config, dict) or "vision_config" not in config:
        raise WeightsNotFoundError(
            f"{folder} holds a transformers config without vision_config (model_type "
            f"{config.get('model_type') if isinstance(config, dict) else None!r}): pass a CLIP folder such as "
            f"{OPENAI_VIT_L_14}'s (CLIPModel.save_pretrained writes one)"
        )
    return config


def projection_dim(folder: Path) -> int:
    """Width of the folder's projected image features (768 for ViT-L/14)."""
    return int(read_config(folder).get("projection_dim", 512))


def describe(folder: Path) -> str:
    """'24 layers x 1024 wide, patch 14, 768-d features': the vision tower a folder holds."""
    config = read_config(folder)
    vision = config["vision_config"]
    return (f"{vision.get('num_hidden_layers', 12)} layers x {vision.get('hidden_size', 768)} wide, "
            f"patch {vision.get('patch_size', 32)}, {config.get('projection_dim', 512)}-d features")


class HFClip(nn.Module):
    """transformers' CLIPModel behind open_clip's interface (``encode_image``, ``encode_text``).

    ``encode_image``: (n, 3, 224, 224) float32 pixels as CLIPImageProcessor gives them -> (n, d)
    projected features (``CLIPModel.get_image_features``). ``encode_text``: (n, 77) int64 token ids
    (open_clip's tokenizer: the same BPE, end-of-text the largest id) -> (n, d)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @staticmethod
    def _pooled(out) -> torch.Tensor:
        # transformers 5 returns an output object whose pooler_output is projected; 4.x a tensor
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._pooled(self.model.get_image_features(pixel_values=pixels))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._pooled(self.model.get_text_features(input_ids=tokens))


def load_hf_clip(folder: str | Path) -> HFClip:
    """The CLIP model in ``folder`` (fp32, eval mode, frozen) on the CPU, read with no network access."""
    folder = Path(folder)
    read_config(folder)  # a clear error before transformers' own
    from geoindex.encoders.torchvision_compat import import_torchvision

    try:
        import_torchvision()  # transformers' image utilities import it
        from transformers import CLIPModel
    except ImportError as e:
        raise MissingDependencyError("CLIP folders in transformers format need transformers: "
                                     "run `pip install transformers`") from e
    from transformers.utils import logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # one "Loading weights" bar per load is noise on stderr
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    except Exception as e:  # truncated or foreign weight files: all mean "no weights here"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsNotFoundError(f"CLIP folder {str(folder)!r} could not be loaded ({reason}): copy it again, "
                                   "or write it with CLIPModel.save_pretrained") from e
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    return HFClip(model).eval().requires_grad_(False)
