"""GeoCLIP's dynamic queue of recent GPS coordinates, the extra negatives of each training step."""

from __future__ import annotations

import numpy as np
import torch

KM_PER_DEGREE = 111.195  # great-circle km per degree of latitude (mean Earth radius 6,371 km)


class GPSQueue:
    """GeoCLIP's dynamic queue of recent coordinates: a ring of ``size`` (lat, lng) rows.

    Unlike the released code's, it starts empty (not with random unit vectors taken for degrees),
    takes batches of any size (wrapping round the end), and its state is saved in checkpoints.
    """

    def __init__(self, size: int):
        self.size = size
        self.coords = np.zeros((size, 2), dtype=np.float64)
        self.ptr = 0
        self.filled = 0

    def push(self, latlng: np.ndarray) -> None:
        if self.size == 0:
            return
        latlng = latlng[-self.size :]
        n = len(latlng)
        end = self.ptr + n
        if end <= self.size:
            self.coords[self.ptr : end] = latlng
        else:
            first = self.size - self.ptr
            self.coords[self.ptr :] = latlng[:first]
            self.coords[: n - first] = latlng[first:]
        self.ptr = end % self.size
        self.filled = min(self.size, self.filled + n)

    def sample(self, rng: np.random.Generator, noise_km: float) -> np.ndarray:
        """The queued coordinates, each moved by Gaussian noise of ``noise_km`` (lat clipped, lng wrapped)."""
        coords = self.coords[: self.filled].copy()
        if noise_km > 0 and len(coords):
            step = rng.normal(0.0, noise_km / KM_PER_DEGREE, size=coords.shape)
            coords[:, 0] = np.clip(coords[:, 0] + step[:, 0], -90, 90)
            stretch = np.maximum(np.cos(np.radians(coords[:, 0])), 1e-3)
            coords[:, 1] = (coords[:, 1] + step[:, 1] / stretch + 180) % 360 - 180
        return coords

    def state(self) -> dict:
        return {"coords": torch.from_numpy(self.coords.copy()), "ptr": self.ptr, "filled": self.filled}

    def load(self, state: dict) -> None:
        self.coords = state["coords"].numpy().copy()
        self.ptr, self.filled = int(state["ptr"]), int(state["filled"])

