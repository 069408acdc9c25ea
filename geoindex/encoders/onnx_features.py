"""The CLIP image tower alone on ONNX Runtime: raw (n, width) features for the feature cache.

A photo build (``geoindex build --photos``) and ``geoindex train features`` store CLIP's image
features, the tower's output before GeoCLIP's head, so they cannot use the tower + head graph of
:mod:`geoindex.encoders.onnx_tower`. This exports the tower alone, with the same cache, checks and
``auto`` decision (the record ``<model>-<digest>-...-features.json``; the digest covers the tower's
weights only), and wraps it as an object with ``encode_image`` like the CLIP model it replaces.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from geoindex.encoders import onnx_tower

log = logging.getLogger(__name__)


class TowerFeatures(nn.Module):
    """pixels (n, 3, S, S) float32 -> (n, width) float32: the CLIP image tower's features, unnormalised."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, pixels):
        return self.clip.encode_image(pixels).float()


class OnnxFeatures:
    """``encode_image(pixels)``: (n, 3, S, S) float32 tensor -> (n, width) float32 tensor, on ONNX Runtime."""

    def __init__(self, tower: onnx_tower.OnnxTower):
        self.tower = tower

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.tower(pixels.cpu().numpy()))


def feature_encoder(clip: nn.Module, model: str, size: int, device: torch.device, backend: str = "auto"):
    """``clip`` itself (torch) or an :class:`OnnxFeatures` over its exported tower, as ``backend``
    asks on ``device`` (see :func:`geoindex.encoders.onnx_tower.choose`); ``auto`` keeps the faster
    measured at export, and falls back to torch with a warning when the export fails its check."""
    tower = onnx_tower.for_backend(backend, device, lambda: onnx_tower.load_graph(
        TowerFeatures(clip).eval(), onnx_tower.weights_digest(clip), model, size, backend=backend, part="-features"))
    if tower is None:
        return clip
    log.info("CLIP image features on ONNX Runtime (%s)", tower.path.name)
    return OnnxFeatures(tower)
