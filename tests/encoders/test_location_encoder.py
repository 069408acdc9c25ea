import numpy as np
import pytest
import torch

from geoindex.errors import InvalidArgumentError, InvalidCoordinateError
from geoindex.encoders.location import encode_latlng, equal_earth, load_location_encoder, validate_latlng


@pytest.mark.parametrize("n", [
    pytest.param(20_000, marks=pytest.mark.slow, id="20k"),  # CI: a seeded fifth of it, the whole planet still
    pytest.param(100_000, marks=[pytest.mark.slow, pytest.mark.nightly], id="100k"),  # make test-nightly
])
def test_parity_with_reference_on_100k_gallery(encoder, gallery_100k, n):
    """Our encoder vs the reference class from the geoclip package, same float32 input."""
    from geoindex.encoders.torchvision_compat import import_torchvision

    import_torchvision()  # the geoclip package imports torchvision: alone, this test must not depend on another's
    from geoclip.model.location_encoder import LocationEncoder as Reference

    rows = np.sort(np.random.default_rng(0).choice(len(gallery_100k), size=n, replace=False))
    points = gallery_100k[rows]
    reference = Reference().eval()  # loads the same packaged weights
    x = torch.from_numpy(points.astype(np.float32))
    with torch.inference_mode():
        ref = torch.cat([reference(x[i : i + 8192]) for i in range(0, len(x), 8192)]).numpy()
    ours = encode_latlng(encoder, points, batch_size=8192, normalize=False)
    assert ours.shape == (n, 512)
    assert np.abs(ours - ref).max() <= 1e-5
    ref_n = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    ours_n = encode_latlng(encoder, points[:5000])
    assert np.abs(ours_n - ref_n[:5000]).max() <= 1e-5


def test_output_is_normalised_float32_and_batch_invariant(encoder):
    rng = np.random.default_rng(0)
    pts = np.column_stack((rng.uniform(-90, 90, 1000), rng.uniform(-180, 180, 1000)))
    a = encode_latlng(encoder, pts, batch_size=1000)
    b = encode_latlng(encoder, pts, batch_size=97)
    assert a.dtype == np.float32 and a.shape == (1000, 512)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.abs(a - b).max() < 1e-5


def test_nearby_points_are_more_similar_than_far_ones(encoder):
    paris = [48.8566, 2.3522]
    v = encode_latlng(encoder, np.array([paris, [48.8666, 2.3522], [48.9466, 2.3522], [40.71, -74.0]]))
    sims = v[1:] @ v[0]
    assert sims[0] > sims[1] > sims[2]  # 1.1 km > 10 km > New York


def test_equal_earth_matches_known_values():
    xy = equal_earth(torch.tensor([[0.0, 0.0], [0.0, 180.0], [90.0, 0.0]]))
    assert xy[0].abs().max() < 1e-7
    assert abs(xy[1, 0] - 1.0) < 1e-4 and abs(xy[1, 1]) < 1e-7  # scaled so the east edge is x = 1
    assert abs(xy[2, 0]) < 1e-6 and xy[2, 1] > 0.4  # north pole on the axis


@pytest.mark.parametrize("bad", [[[91.0, 0.0]], [[0.0, 181.0]], [[np.nan, 0.0]], [[0.0, np.inf]], [1.0, 2.0]])
def test_bad_coordinates_are_named(bad):
    with pytest.raises(InvalidCoordinateError, match="lat, lng|shape"):
        validate_latlng(np.array(bad))


def test_half_precision_is_refused_on_cpu():
    with pytest.raises(InvalidArgumentError, match="needs a CUDA device"):
        load_location_encoder("cpu", "fp16")
    with pytest.raises(InvalidArgumentError, match="not one of"):
        load_location_encoder("cpu", "int8")


def test_missing_weights_say_how_to_fix(monkeypatch, tmp_path):
    from geoindex.errors import WeightsNotFoundError

    monkeypatch.setenv("GEOINDEX_GEOCLIP_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="pip install"):
        load_location_encoder()


@pytest.mark.gpu
def test_cuda_matches_cpu(encoder):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(1)
    pts = np.column_stack((rng.uniform(-90, 90, 4096), rng.uniform(-180, 180, 4096)))
    cpu = encode_latlng(encoder, pts)
    gpu = encode_latlng(load_location_encoder("cuda"), pts)
    assert np.abs(cpu - gpu).max() < 1e-3
    half = encode_latlng(load_location_encoder("cuda", "fp16"), pts)
    assert np.mean(np.sum(cpu * half, axis=1)) > 0.999
