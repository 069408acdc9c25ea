"""Several photos of one place, one answer: the joint posterior of independent photos.

GeoCLIP's posterior for one photo is p(c | x) ~ exp(s <q, c>) over cells c (s: the logit scale,
q and c unit vectors). For n photos taken at the same place, independent given the place, and a
uniform prior over cells, p(c | x_1..x_n) ~ prod_i p(c | x_i) ~ exp(s <q_1 + ... + q_n, c>). So the
joint answer is one search with the summed embedding: its direction q* = sum / |sum| ranks the cells
(what FAISS searches), and the logits are s |sum| <q*, c>, the scale multiplied by |sum| (n when
the photos agree exactly, less when they disagree). With a non-uniform prior p(c) the product
would divide by p(c)^(n-1); GeoCLIP's gallery has no explicit prior, so none is divided out.
"""

from __future__ import annotations

import numpy as np

from geoindex.errors import InvalidQueryError
from geoindex.locate.options import validate_embeddings


def joint_query(xq) -> tuple[np.ndarray, float]:
    """(n, 512) embeddings -> ((1, 512) float32 unit direction of their sum, |sum|: the factor the
    logit scale is multiplied by, ``QueryOptions(joint_scale=...)``)."""
    xq = validate_embeddings(xq).astype(np.float64)
    total = xq.sum(axis=0)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise InvalidQueryError(f"the {len(xq)} embeddings cancel out (their sum is zero): they cannot be one place")
    return (total / norm)[None, :].astype(np.float32), norm


def joint_options(xq, options):
    """(n, 512) queries and options asking ``joint=True`` -> the one joint query and options that
    say how to score it (``joint_scale``); anything else passes through unchanged."""
    from dataclasses import replace

    if not getattr(options, "joint", False):
        return xq, options
    q, scale = joint_query(xq)
    return q, replace(options, joint=False, joint_scale=options.joint_scale * scale)
