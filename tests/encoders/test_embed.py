"""geoindex-embed and POST /v1/embed/locations: location embeddings as features."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from fastapi.testclient import TestClient

from geoindex.encoders.location import encode_latlng
from geoindex.encoders.location_files import embed_file, read_embeddings
from geoindex.errors import GalleryFileError, InvalidArgumentError
from geoindex.cli.embed import main

rng = np.random.default_rng(7)
POINTS = np.column_stack((rng.uniform(-89.9, 89.9, 50), rng.uniform(-180, 180, 50)))


def reference_vectors(latlng: np.ndarray) -> np.ndarray:
    """The geoclip package's own LocationEncoder (not ours), L2-normalised."""
    from geoindex.encoders.torchvision_compat import import_torchvision

    import_torchvision()  # geoclip imports transformers, which imports torchvision (CPU-only torch here)
    from geoclip.model.location_encoder import LocationEncoder as Reference

    with torch.no_grad():
        y = Reference().eval()(torch.from_numpy(latlng.astype(np.float32)))
    return torch.nn.functional.normalize(y, dim=1).numpy()


def write_csv(path, latlng, header="lat,lng"):
    path.write_text((header + "\n" if header else "") + "\n".join(f"{float(a)!r},{float(b)!r}" for a, b in latlng) + "\n")
    return path


@pytest.mark.parametrize("src_kind,out_name", [("csv", "e.npy"), ("parquet", "e.parquet"), ("csv", "e.parquet")])
def test_cli_matches_the_pretrained_encoder(tmp_path, src_kind, out_name):
    src = tmp_path / f"p.{src_kind}"
    if src_kind == "csv":
        write_csv(src, POINTS, header="LATITUDE,Longitude")
    else:
        pq.write_table(pa.table({"id": np.arange(50), "lon": POINTS[:, 1], "lat": POINTS[:, 0]}), src)
    out = tmp_path / out_name
    # batches of 16 over 50 rows: the stream crosses batch edges, and the rows stay in order
    assert main([str(src), "-o", str(out), "--batch-size", "16", "--no-progress"]) == 0
    xb = read_embeddings(out)
    assert xb.shape == (50, 512) and xb.dtype == np.float32
    assert np.abs(xb - reference_vectors(POINTS)).max() < 1e-5
    assert np.allclose(np.linalg.norm(xb, axis=1), 1, atol=1e-6)
    if out.suffix == ".parquet":
        table = pq.read_table(out)
        assert table.column_names == ["lat", "lng", "embedding"]
        assert np.array_equal(table.column("lat").to_numpy(), POINTS[:, 0])


def test_bad_rows_are_named_and_nothing_is_written(tmp_path, capsys):
    src = write_csv(tmp_path / "p.csv", [(10, 20), (95, 3), (1, 2)])
    out = tmp_path / "e.npy"
    assert main([str(src), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "95.0, 3.0" in err and "outside" in err
    assert list(tmp_path.iterdir()) == [src]


@pytest.mark.parametrize("args,match", [
    (["p.txt", "-o", "e.npy"], "not .csv or .parquet"),
    (["p.csv", "-o", "e.json"], "does not end in .npy or .parquet"),
    (["p.csv", "-o", "exists.npy"], "exists: pass --overwrite"),
    (["p.csv", "-o", "nowhere/e.npy"], "does not exist: create it"),
    (["missing.csv", "-o", "e.npy"], "does not exist"),
    (["p.csv", "-o", "e.npy", "--batch-size", "0"], "batch size 0"),
])
def test_bad_arguments_are_refused_with_the_fix(tmp_path, capsys, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "p.csv", POINTS[:3])
    (tmp_path / "p.txt").write_text("1,2\n")
    (tmp_path / "exists.npy").write_bytes(b"keep")
    assert main(args + ["--no-progress"]) == 2
    assert match in capsys.readouterr().err
    assert (tmp_path / "exists.npy").read_bytes() == b"keep" and not (tmp_path / "e.npy").exists()


def test_parquet_nulls_and_missing_columns_are_named(tmp_path):
    nulls = tmp_path / "n.parquet"
    pq.write_table(pa.table({"lat": [1.0, None], "lng": [2.0, 3.0]}), nulls)
    with pytest.raises(GalleryFileError, match="row 2: lat is null"):
        embed_file(nulls, tmp_path / "e.npy", progress=False)
    wrong = tmp_path / "w.parquet"
    pq.write_table(pa.table({"y": [1.0], "x": [2.0]}), wrong)
    with pytest.raises(GalleryFileError, match="no lat and lng/lon columns"):
        embed_file(wrong, tmp_path / "e.npy", progress=False)


def test_a_failure_midway_leaves_no_output(tmp_path, encoder, monkeypatch):
    import geoindex.encoders.location_files as lf

    src = write_csv(tmp_path / "p.csv", POINTS)
    calls = []

    def failing(model, latlng, batch_size):
        calls.append(len(latlng))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode_latlng(model, latlng, batch_size=batch_size)

    monkeypatch.setattr(lf, "encode_latlng", failing)
    with pytest.raises(KeyboardInterrupt):
        embed_file(src, tmp_path / "e.parquet", batch_size=16, progress=False, model=encoder)
    assert calls == [16, 16] and sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]
    with pytest.raises(InvalidArgumentError, match="does not end in"):
        embed_file(src, tmp_path / "e.csv", progress=False, model=encoder)


@pytest.fixture(scope="module")
def client(built_r2):
    from geoindex.serve.app import create_app
    from geoindex.serve.settings import ServeSettings

    settings = ServeSettings(index=str(built_r2), embeddings_only=True, max_coordinates=8)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_route_matches_the_encoder_and_its_vectors_find_their_cells(client):
    r = client.post("/v1/embed/locations", json={"coordinates": POINTS[:8].tolist()})
    assert r.status_code == 200
    xb = np.asarray(r.json()["embeddings"], dtype=np.float32)
    assert r.json()["inside_region"] == [True] * 8  # a global index covers every point
    assert xb.shape == (8, 512) and np.abs(xb - reference_vectors(POINTS[:8])).max() < 1e-5
    # an embedding of a gallery cell's centre, located, finds that cell first
    geo = client.app.state.engine.geolocator
    centre = [float(geo.table.lat[5]), float(geo.table.lng[5])]
    [vector] = client.post("/v1/embed/locations", json={"coordinates": [centre]}).json()["embeddings"]
    top = client.post("/v1/locate/embedding", json={"embeddings": [vector], "top_k": 1}).json()
    assert top["results"][0]["predictions"][0]["cell"] == int(geo.table.cell[5])


@pytest.mark.parametrize("body,match", [
    ({"coordinates": [[95, 0]]}, "coordinates.0.0 = 95"),
    ({"coordinates": [[0, 181]]}, "coordinates.0.1 = 181"),
    ({"coordinates": [[0]]}, "coordinates.0"),
    ({"coordinates": []}, "coordinates"),
    ({"coordinates": [[1, 2]] * 9}, "at most 8"),
    ({"coordinates": [["1", 2]]}, "give a JSON number"),
])
def test_route_refuses_bad_coordinates(client, body, match):
    r = client.post("/v1/embed/locations", json=body)
    assert r.status_code == 422 and match in r.json()["error"]["message"]
    assert client.get("/healthz").status_code == 200
