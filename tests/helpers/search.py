"""Brute-force ground truth for the search tests."""

import numpy as np


def brute_force_topk(xq: np.ndarray, xb: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    scores = xq @ xb.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return ids[top]


def recall_at(I: np.ndarray, gt: np.ndarray) -> float:
    k = gt.shape[1]
    return float(np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(I, gt)]))
