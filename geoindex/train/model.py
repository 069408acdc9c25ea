"""The trained parts (image head, location encoder, temperature) and where training starts from."""

from __future__ import annotations

import math

import torch
from torch import nn

from geoindex.encoders.weights import geoclip_files
from geoindex.hashing import sha256_file
from geoindex.errors import TrainingDataError
from geoindex.train.config import FitConfig


class GeoCLIPModel(nn.Module):
    """The trained parts: image head (CLIP features -> 512), location encoder, log temperature."""

    def __init__(self, head: nn.Sequential, location: nn.Module, logit_scale: float):
        super().__init__()
        self.head = head
        self.location = location
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))

    def images(self, feats: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.head(feats).float(), dim=1)

    def gps(self, latlng: torch.Tensor) -> torch.Tensor:
        with torch.autocast(latlng.device.type, enabled=False):  # the phases need float32 (sigma 2^8)
            feats = self.location.fourier_features(latlng.float())
        return nn.functional.normalize(self.location.from_features(feats).float(), dim=1)


def initial_model(config: FitConfig, width: int) -> tuple[GeoCLIPModel, str | None, str]:
    """The model training starts from, the SHA-256 of its location weights (None from scratch),
    and where it came from."""
    from geoindex.encoders.clip import head_width, load_geoclip_head, make_head
    from geoindex.encoders.location import LocationEncoder, location_state_dict

    if config.init == "scratch":
        torch.manual_seed(config.seed)
        return GeoCLIPModel(make_head(width), random_location_encoder(config.seed), math.log(1 / 0.07)), None, "scratch"
    files = geoclip_files(config.base_weights)
    location = LocationEncoder.from_geoclip_state_dict(location_state_dict(config.base_weights))
    head = load_geoclip_head(config.base_weights)
    if config.new_head:
        torch.manual_seed(config.seed)
        head = make_head(width)
    elif head_width(head) != width:
        raise TrainingDataError(
            f"the features are {width}-d but the GeoCLIP head in {files.source} takes {head_width(head)}-d: "
            f"cache features with the backbone it was trained on, or pass --new-head to train a new head for {width}-d"
        )
    scale = float(torch.load(files.logit_scale, map_location="cpu", weights_only=True))
    return GeoCLIPModel(head, location, scale), sha256_file(files.location_encoder), files.source


def random_location_encoder(seed: int) -> nn.Module:
    """A GeoCLIP location encoder with fresh weights: Fourier frequencies ~ N(0, sigma^2) per branch
    (sigma 2^0, 2^4, 2^8, as the released model drew them) and PyTorch's default Linear init."""
    from geoindex.encoders.location import SIGMAS, LocationEncoder

    g = torch.Generator().manual_seed(seed)
    state = {}
    for i, sigma in enumerate(SIGMAS):
        state[f"LocEnc{i}.capsule.0.b"] = sigma * torch.randn(256, 2, generator=g)
        for key, (n_out, n_in) in (("capsule.1", (1024, 512)), ("capsule.3", (1024, 1024)),
                                   ("capsule.5", (1024, 1024)), ("head.0", (512, 1024))):
            bound = 1 / math.sqrt(n_in)
            state[f"LocEnc{i}.{key}.weight"] = (torch.rand(n_out, n_in, generator=g) * 2 - 1) * bound
            state[f"LocEnc{i}.{key}.bias"] = (torch.rand(n_out, generator=g) * 2 - 1) * bound
    return LocationEncoder.from_geoclip_state_dict(state)
