"""Several photos of one place answered as one (issue 34, item 6): one search with the summed
embedding and |sum| (<= n) times the logit scale."""

import json

import numpy as np
import pytest

from geoindex.cells.geocode import haversine_km
from geoindex.cli.locate import main as geolocate
from geoindex.encoders.location import encode_latlng
from geoindex.errors import InvalidQueryError
from geoindex.locate.geolocator import Geolocator
from geoindex.locate.joint import joint_query
from geoindex.locate.options import QueryOptions

PLACE = (40.4, -3.7)  # Madrid


def noisy_copies(e: np.ndarray, n: int, r: float, seed: int) -> np.ndarray:
    """n unit vectors at cosine 1/sqrt(1 + r^2) from e, in random directions orthogonal to it."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n, e.shape[1]))
    u -= (u @ e.T) * e
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    q = e + r * u
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def test_joint_query_is_the_normalised_sum_and_its_length():
    xq = np.eye(4, 512, dtype=np.float32)[:3]
    q, scale = joint_query(xq)
    assert scale == pytest.approx(np.sqrt(3)) and np.allclose(q[0, :3], 1 / np.sqrt(3))
    with pytest.raises(InvalidQueryError, match="cancel out"):
        joint_query(np.stack([xq[0], -xq[0]]))


def test_three_noisy_photos_answer_nearer_and_narrower_than_one(flat_r2, encoder, tmp_path, capsys):
    geo = Geolocator(flat_r2)
    e = encode_latlng(encoder, np.array([PLACE]))
    photos = noisy_copies(e, 3, 1.5, seed=0)  # noise at which each photo alone misses (checked below)
    options = QueryOptions(k=3, search="refine=4")
    singles = geo.locate(photos, options)
    single_km = np.array([haversine_km(*PLACE, r.predictions[0].lat, r.predictions[0].lng) for r in singles])
    assert (single_km > 50).all(), single_km  # each photo alone misses
    [joint] = geo.locate(photos, QueryOptions(k=3, search="refine=4", joint=True))
    joint_km = haversine_km(*PLACE, joint.predictions[0].lat, joint.predictions[0].lng)
    assert joint_km < np.median(single_km), (joint_km, single_km)
    assert joint.radius_km < np.median([r.radius_km for r in singles])
    # the CLI: one answer for the three
    np.save(tmp_path / "q.npy", photos)
    [plain] = geo.locate(photos, QueryOptions(k=3, joint=True))
    assert geolocate(["--index", str(flat_r2), "--embedding", str(tmp_path / "q.npy"), "--joint", "-k", "3",
                      "--format", "json"]) == 0
    [out] = json.loads(capsys.readouterr().out)
    assert out["query"].startswith("joint (3)") and out["radius_km"] == pytest.approx(plain.radius_km, rel=1e-3)


def test_the_api_answers_a_joint_batch_once(flat_r2, encoder):
    from fastapi.testclient import TestClient

    from geoindex.serve.app import create_app
    from geoindex.serve.settings import ServeSettings

    photos = noisy_copies(encode_latlng(encoder, np.array([PLACE])), 3, 1.5, seed=0)
    with TestClient(create_app(ServeSettings(index=str(flat_r2), embeddings_only=True))) as client:
        body = {"embeddings": photos.tolist(), "top_k": 2}
        assert len(client.post("/v1/locate/embedding", json=body).json()["results"]) == 3
        r = client.post("/v1/locate/embedding", json={**body, "joint": True})
        assert r.status_code == 200 and len(r.json()["results"]) == 1
