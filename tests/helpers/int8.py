"""An int8 tower that lost the weights' meaning, for the int8 self-check's refusals."""

from __future__ import annotations

import numpy as np


class Scrambled:
    """Random unit vectors in place of the int8 tower's embeddings (what a bad quantization does);
    keeps the real tower's ``path`` and ``record``, which the check's cache is keyed by."""

    def __init__(self, real):
        self.path, self.record = real.path, real.record

    def __call__(self, pixels):
        x = np.random.default_rng(len(pixels)).normal(size=(len(pixels), 512)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
