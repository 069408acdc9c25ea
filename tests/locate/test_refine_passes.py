"""Refinement's encoder passes (issue 36): what a small pass skips must not change what it computes.

A pass of a few points reads only the weight rows of units active at some point (the product less
its exact-zero terms: float32 rounding apart, the dense one); the descent keeps the slow branches
from its last full pass instead of evaluating them again; the answers are those of the passes it
no longer makes."""

import numpy as np
import pytest
import torch

from geoindex import Geolocator, QueryOptions
from geoindex.encoders import location
from geoindex.encoders.location import _active, encode_latlng, load_location_encoder
from geoindex.locate.refine import Refiner

POINTS = np.array([[48.8584, 2.2945], [48.86, 2.30], [-33.8568, 151.2153], [35.6586, 139.7454],
                   [64.1466, -21.9426], [-0.2299, -78.5249], [1.29, 103.85]])


@pytest.fixture(scope="module")
def model():
    return load_location_encoder()


def test_a_small_pass_reads_only_active_rows_and_computes_the_dense_product(model, monkeypatch):
    pts = torch.as_tensor(POINTS[:1], dtype=torch.float32)
    with torch.inference_mode():
        v = 2 * np.pi * location.equal_earth(pts) @ model.b[0].T
        h = torch.addmm(model.b1[0], torch.cat((torch.cos(v), torch.sin(v)), -1), model.w1[0]).relu_()
        hs, ws = _active(h, model.w2[0])
        assert ws.shape[0] < 0.6 * 1024 and hs.shape[1] == ws.shape[0]  # sigma 2^0 at one point: most units off
        assert torch.allclose(hs @ ws, h @ model.w2[0], rtol=0, atol=1e-5)
        sparse = model(torch.as_tensor(POINTS, dtype=torch.float32))
    monkeypatch.setattr(location, "SPARSE_POINTS", 0)  # every pass dense
    with torch.inference_mode():
        dense = model(torch.as_tensor(POINTS, dtype=torch.float32))
        assert _active(h, model.w2[0])[1].shape[0] == 1024
    assert (sparse - dense).abs().max() < 1e-5 * dense.abs().max()
    big = encode_latlng(model, np.repeat(POINTS, 10, axis=0))  # 70 points: over SPARSE_POINTS, dense
    assert np.abs(big[::10] - encode_latlng(model, POINTS)).max() < 1e-5


def test_branches_with_a_partial_sum_is_forward_and_its_slow_branches(model):
    pts = torch.as_tensor(POINTS, dtype=torch.float32)
    with torch.inference_mode():
        full, slow = model.branches(pts, (0, 1, 2), partial=2)
        assert torch.equal(full, model(pts))  # the same operations: the same bits
        assert torch.equal(slow, model.branches(pts, (0, 1)))


class NoKeptSlowBranches(Refiner):
    """The descent as before issue 36: the slow branches evaluated anew at the first level held."""

    def scores(self, xq, latlng, slow=False):
        s = super().scores(xq, latlng)
        return (s, None) if slow else s


def test_the_descent_keeps_the_slow_branches_of_its_last_full_pass(built_r2, model, monkeypatch):
    geo = Geolocator(built_r2)
    xq = encode_latlng(model, POINTS + [[0.3, -0.2]])
    D, I = geo.search(xq, 4, QueryOptions(k=4))
    starts = np.stack([geo._latlng_of(row) for row in I])
    kept, before = Refiner(lambda: model), NoKeptSlowBranches(lambda: model)
    coarse_points = {}
    for name, refiner in (("kept", kept), ("before", before)):
        calls = coarse_points.setdefault(name, [])
        real = refiner._coarse
        monkeypatch.setattr(refiner, "_coarse", lambda latlng, real=real, calls=calls: calls.append(latlng.size // 2) or real(latlng))
        pts, scores = refiner.refine(xq, starts, I, geo.resolution)
        coarse_points[name + "_answer"] = (pts, scores)
    # res 2: levels 3 and 4 run every branch, level 5 holds the slow ones: from level 4's pass now
    assert sum(coarse_points["kept"]) < sum(coarse_points["before"])
    assert len(coarse_points["before"]) - len(coarse_points["kept"]) == 1
    (p1, s1), (p0, s0) = coarse_points["kept_answer"], coarse_points["before_answer"]
    assert np.abs(p1 - p0).max() < 1e-9 and np.abs(s1 - s0).max() < 1e-6
