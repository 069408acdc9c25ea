"""HTTP API: every route, every bad input (4xx, never 5xx), micro-batching, metrics, OpenAPI fuzz."""

import asyncio
import io
import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from PIL import Image

from geoindex.serve.app import create_app
from geoindex.serve.batching import MicroBatcher
from geoindex.cli.serve import main as serve_main
from geoindex.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def settings(built_r2):
    return ServeSettings(index=str(built_r2), clip_model="tiny-test", max_images=4, max_embeddings=8,
                         max_upload_bytes=200_000, max_request_bytes=1_000_000, max_pixels=4_000_000)


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def jpeg(w=120, h=80, color=(30, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "JPEG")
    return buf.getvalue()


def gallery_vectors(client, n=3):
    geo = client.app.state.engine.geolocator
    from geoindex.encoders.location import encode_latlng, load_location_encoder

    xb = encode_latlng(load_location_encoder(), np.column_stack((geo.table.lat[:n], geo.table.lng[:n])))
    return geo.table.cell[:n], xb


def test_health_ready_index(client):
    assert client.get("/healthz").json() == {"status": "ok", "integrity": {"state": "ok", "files": [], "bytes": 0,
                                                                         "seconds": 0.0}}
    assert client.get("/readyz").json()["status"] == "ready"
    info = client.get("/v1/index").json()
    assert info["gallery"]["resolution"] == 2 and info["factory"].startswith("IVFH3")


def test_locate_embedding(client):
    cells, xb = gallery_vectors(client)
    r = client.post("/v1/locate/embedding", json={"embeddings": xb.tolist(), "top_k": 3})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    results = r.json()["results"]
    assert len(results) == 3
    assert [res["predictions"][0]["cell"] for res in results] == cells.tolist()
    for res in results:
        preds = res["predictions"]
        assert len(preds) == 3 and {"cell", "lat", "lng", "probability", "country", "admin1", "place"} <= set(preds[0])
        assert [p["probability"] for p in preds] == sorted((p["probability"] for p in preds), reverse=True)


def test_geojson_by_query_or_accept(client):
    _, xb = gallery_vectors(client, 1)
    body = {"embeddings": xb.tolist(), "top_k": 2, "confidence": 0.5}
    for r in (client.post("/v1/locate/embedding?format=geojson", json=body),
              client.post("/v1/locate/embedding", json=body, headers={"accept": "application/geo+json"})):
        assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
        fc = r.json()
        assert fc["type"] == "FeatureCollection"
        assert [f["geometry"]["type"] for f in fc["features"]][:2] == ["Point", "Point"]
        assert fc["features"][-1]["properties"]["kind"] == "confidence_region"


def test_filters(client):
    _, xb = gallery_vectors(client, 1)
    r = client.post("/v1/locate/embedding", json={"embeddings": xb.tolist(), "top_k": 5, "country": ["FR", "DE"]})
    assert {p["country"] for p in r.json()["results"][0]["predictions"]} <= {"FR", "DE"}
    r = client.post("/v1/locate/embedding", json={"embeddings": xb.tolist(), "bbox": [-10, 35, 30, 60]})
    for p in r.json()["results"][0]["predictions"]:
        assert 35 <= p["lat"] <= 60 and -10 <= p["lng"] <= 30
    r = client.post("/v1/locate/embedding", json={"embeddings": xb.tolist(), "cells": ["8009fffffffffff"]})
    assert r.status_code == 200


def test_locate_images_multipart_and_text(client):
    files = [("images", ("a.jpg", jpeg(), "image/jpeg")), ("images", ("b.png", jpeg(color=(200, 10, 10)), "image/png"))]
    r = client.post("/v1/locate", files=files, data={"top_k": "2", "country": ["FR"], "bbox": "-10,35,30,60"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2 and all(p["country"] == "FR" for res in results for p in res["predictions"])
    r = client.post("/v1/locate/text", json={"texts": ["a beach with palm trees"], "top_k": 2})
    assert r.status_code == 200 and len(r.json()["results"][0]["predictions"]) == 2


def test_cells_route(client):
    cell = int(client.app.state.engine.geolocator.table.cell[5])
    import h3

    for key in (str(cell), h3.int_to_str(cell)):
        r = client.get(f"/v1/cells/{key}")
        assert r.status_code == 200 and r.json()["cell"] == cell and r.json()["cell_h3"] == h3.int_to_str(cell)
    assert client.get("/v1/cells/851fb467fffffff").status_code == 404  # a res-5 cell: not in a res-2 index
    assert client.get("/v1/cells/zzz").status_code == 422
    assert client.get("/v1/cells/99999999999999999999999999").status_code == 422


@pytest.mark.parametrize("body,status,match", [
    ({"embeddings": [[1.0] * 511]}, 422, "512"),
    ({"embeddings": [[float("nan")] * 512]}, 422, ""),
    ({"embeddings": []}, 422, "at least 1 item"),
    ({"embeddings": [[1.0] * 512] * 9}, 422, "at most 8 items"),
    ({"embeddings": [[1e39] * 512]}, 200, ""),  # past float32, still a direction
    ({"embeddings": [[1e300] * 512]}, 200, ""),  # its square is past float64
    ({"embeddings": [[0.0] * 512]}, 422, "all zeros"),
    ({"embeddings": [[1.0] * 512], "top_k": 0}, 422, "top_k"),
    ({"embeddings": [[1.0] * 512], "top_k": 101}, 422, "top_k"),
    ({"embeddings": [[1.0] * 512], "country": ["ZZ"]}, 422, "no cells"),
    ({"embeddings": [[1.0] * 512], "bbox": [10, 50, 20, 40]}, 422, "inverted"),
    ({"embeddings": [[1.0] * 512], "cells": ["nope"]}, 422, "H3"),
    ({"embeddings": [[1.0] * 512], "confidence": 2}, 422, "confidence"),
    ({"embeddings": [[1.0] * 512], "aggregate_res": 9}, 422, "aggregate_res"),
    # the schema says number: text and booleans are refused, not coerced (found by schemathesis)
    ({"embeddings": [[1.0] * 512], "confidence": "0.5"}, 422, "give a JSON number"),
    ({"embeddings": [[1.0] * 512], "top_k": True}, 422, "give a JSON number"),
    ({"embeddings": [[1.0] * 512], "top_k": "5"}, 422, "top_k"),
    ({"embeddings": [[1.0] * 512], "top_k": 2.0}, 200, ""),  # JSON Schema's integer 2
    ({"embeddings": "x"}, 422, ""),
    ({}, 422, "embeddings"),
])
def test_bad_embedding_requests(client, body, status, match):
    r = client.post("/v1/locate/embedding", content=json.dumps(body, allow_nan=True),
                    headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    if status != 200:
        err = r.json()["error"]
        assert err["status"] == status and match in err["message"]


def test_bad_images(client):
    def post(files, **kw):
        return client.post("/v1/locate", files=files, **kw)

    big = jpeg()
    cases = [
        (post([("images", ("x.txt", b"hello", "text/plain"))]), 415),
        (post([("images", ("x.jpg", b"not a jpeg", "image/jpeg"))]), 415),
        (post([("images", ("t.jpg", big[: len(big) // 2], "image/jpeg"))]), 415),
        (post([("images", ("e.jpg", b"", "image/jpeg"))]), 415),
        (post([("images", ("h.png", _bomb(), "image/png"))]), 413),
        (post([("images", ("b.bin", b"\xff" * 300_000, "image/jpeg"))]), 413),
        (post([("images", ("a.jpg", big, "image/jpeg"))] * 5), 422),
        (post([], data={"top_k": "3"}), 422),
        (post([("images", ("a.jpg", big, "image/jpeg"))], data={"top_k": "abc"}), 422),
        (post([("images", ("a.jpg", big, "image/jpeg"))], data={"bbox": "1,2,3"}), 422),
        (client.post("/v1/locate", content=b"x" * 2_000_000, headers={"content-type": "multipart/form-data; boundary=zz"}), 413),
    ]
    for r, status in cases:
        assert r.status_code == status, r.text
        assert r.json()["error"]["status"] == status
    assert client.get("/healthz").status_code == 200  # still serving


def _bomb() -> bytes:
    from tests.helpers.images import png_header_only

    return png_header_only(50_000, 50_000)


def test_text_errors(client):
    assert client.post("/v1/locate/text", json={"texts": []}).status_code == 422
    assert client.post("/v1/locate/text", json={"texts": ["  "]}).status_code == 422
    assert client.post("/v1/locate/text", json={"texts": ["x" * 2000]}).status_code == 422
    assert client.post("/v1/locate/text", json={"texts": ["ok"], "top_k": -1}).status_code == 422


def test_metrics(client):
    client.get("/healthz")
    client.post("/v1/locate/embedding", json={"embeddings": [[1.0] * 511]})
    text = client.get("/metrics").text
    assert 'geoindex_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="/v1/locate/embedding",status="422"' in text
    assert "geoindex_http_request_seconds_bucket" in text and "geoindex_http_in_flight_requests" in text
    assert 'route="/v1/cells/{cell}"' in text  # templates, not raw paths


def test_openapi_docs(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/locate", "/v1/locate/text", "/v1/locate/embedding", "/v1/cells/{cell}", "/v1/index"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_micro_batching_merges_concurrent_requests():
    calls = []

    def encode(items):
        calls.append(len(items))
        return np.arange(len(items))[:, None] * np.ones((1, 2))

    async def scenario():
        batcher = MicroBatcher(encode, max_batch=16, window_s=0.02)
        outs = await asyncio.gather(*(batcher.submit([i, i]) for i in range(6)))
        await batcher.close()
        return outs

    outs = asyncio.run(scenario())
    assert sum(calls) == 12 and len(calls) < 6  # merged
    assert all(o.shape == (2, 2) for o in outs)


def test_batch_errors_reach_each_request_and_worker_survives():
    state = {"n": 0}

    def encode(items):
        state["n"] += 1
        if state["n"] == 1:
            raise RuntimeError("boom")
        return np.zeros((len(items), 1))

    async def scenario():
        batcher = MicroBatcher(encode, max_batch=4, window_s=0.0)
        with pytest.raises(RuntimeError):
            await batcher.submit([1])
        out = await batcher.submit([1, 2])
        await batcher.close()
        return out

    assert asyncio.run(scenario()).shape == (2, 1)


@pytest.mark.parametrize("route", ["/v1/locate/embedding", "/v1/locate/text"])
@pytest.mark.parametrize("headers", [{"content-type": "application/x-www-form-urlencoded"},
                                     {"content-type": "text/plain"}, {}])
def test_json_routes_refuse_other_content_types_with_415(client, route, headers):
    r = client.post(route, content=b'{"texts": ["a beach"], "embeddings": [[1]]}', headers=headers)
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]


def test_nan_and_too_large_bodies_say_what_to_send(client):
    r = client.post("/v1/locate/embedding", content=b'{"embeddings": [[NaN, 1]]}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "NaN and Infinity are not JSON numbers" in r.json()["error"]["message"]
    r = client.post("/v1/locate/embedding", content=b"[" * 2_000_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "fewer embeddings" in r.json()["error"]["message"]
    assert "image" not in r.json()["error"]["message"]


@pytest.mark.parametrize("flag,value", [("--body-timeout", "0"), ("--max-top-k", "-1"), ("--batch-window-ms", "-2")])
def test_refuses_nonpositive_limits(built_r2, capsys, flag, value):
    assert serve_main(["--index", str(built_r2), "--embeddings-only", flag, value]) == 2
    err = capsys.readouterr().err
    assert f"{flag} {float(value) if 'timeout' in flag or 'window' in flag else int(value)}" in err and "Traceback" not in err


def test_refuses_to_start_on_bad_index(tmp_path, capsys):
    assert serve_main(["--index", str(tmp_path / "nope"), "--embeddings-only"]) == 2
    err = capsys.readouterr().err
    assert "geoindex build" in err and "Traceback" not in err


@pytest.mark.slow  # over ~4 s: the full suite (make test-all) runs it
def test_supervisor_checks_in_a_child_and_never_loads_the_index(built_r2, tmp_path, capsys, monkeypatch):
    """--workers N: the settings are checked by loading an engine in a spawned process, so the
    supervisor keeps no index in memory; a bad index still stops the start with one line."""
    import uvicorn

    import geoindex.serve.app as serve_app

    assert serve_main(["--index", str(tmp_path / "nope"), "--embeddings-only", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "geoindex build" in err and "Traceback" not in err and err.count("\n") == 1

    def no_engine_here(*args, **kwargs):
        raise AssertionError("the supervisor loaded an engine")

    runs = []
    monkeypatch.setattr(serve_app.Engine, "__init__", no_engine_here)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: runs.append((args, kwargs)))
    assert serve_main(["--index", str(built_r2), "--embeddings-only", "--workers", "2"]) == 0
    assert runs and runs[0][0] == ("geoindex.serve.app:app_from_env",) and runs[0][1]["workers"] == 2


@pytest.mark.slow
def test_offline_start_without_clip_weights_names_both_ways_out(built_r2):
    code = ("import sys\nfrom geoindex.cli.serve import main\n"
            f"sys.exit(main(['--index', {str(built_r2)!r}]))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("GEOINDEX_CLIP_CHECKPOINT", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and line.startswith("geoindex serve: error:")
    assert "--clip-checkpoint" in line and "--embeddings-only" in line


def test_embeddings_only_mode(settings):
    app = create_app(replace(settings, embeddings_only=True))
    with TestClient(app) as c:
        assert c.post("/v1/locate/text", json={"texts": ["x"]}).status_code == 503
        assert c.post("/v1/locate/embedding", json={"embeddings": [[1.0] * 512]}).status_code == 200


@pytest.mark.slow
def test_schemathesis_finds_no_failure(settings):
    """schemathesis (property-based, from the OpenAPI schema) over every operation, with schema-valid
    and schema-violating requests: every check passes (no 5xx, only documented status codes and
    content types, answers that match their schema, schema-violating data refused). Left out:
    positive_data_acceptance, because part of what is valid is not JSON Schema (image bytes that
    decode, south < north, a country with cells in this index); instead nearly every schema-valid
    request must get past request validation into the route."""
    import schemathesis
    from hypothesis import given
    from schemathesis import GenerationMode
    from schemathesis.checks import positive_data_acceptance

    app = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    examples = int(os.environ.get("GEOINDEX_FUZZ_EXAMPLES", 25))
    failures, seen = [], []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for result in schema.get_all_operations():
            operation = result.ok()
            if mode is GenerationMode.NEGATIVE and not operation.body and not operation.path_parameters:
                continue  # nothing to violate in GET /healthz and the like

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(max_examples=examples, deadline=None, database=None,
                                 suppress_health_check=list(HealthCheck))
            def run(case):
                response = case.call()
                seen.append((mode, operation.label, response.status_code, response.text[:200]))
                try:
                    case.validate_response(response, excluded_checks=[positive_data_acceptance])
                except BaseException as e:  # a FailureGroup: keep going, report them all
                    failures.append((mode.value, operation.label, response.status_code, str(e)[:300]))

            run()
    assert not failures, failures[:3]
    assert len(seen) > 200
    valid = [(label, text) for m, label, status, text in seen if m is GenerationMode.POSITIVE and "/locate/" in label]
    passed_validation = [t for _, t in valid if '"ValidationError"' not in t]
    assert len(passed_validation) >= 0.95 * len(valid), [t for _, t in valid if '"ValidationError"' in t][:3]
    answered = [s for m, label, s, _ in seen if m is GenerationMode.POSITIVE and "/locate/" in label and s == 200]
    assert len(answered) >= 0.15 * len(valid)
    assert app.state.ready  # and still serving


def test_a_router_alone_on_a_bare_app_with_a_fake_engine():
    """A route lives outside create_app: the locate router on a bare FastAPI, the engine a fake given
    through the dependency; the server's limits come from the engine, the options reach its search."""
    from fastapi import FastAPI

    from geoindex.serve.errors import HANDLERS
    from geoindex.serve.requests import Limits
    from geoindex.serve.routes import get_engine, locate

    class FakeResult:
        def __init__(self, k):
            self.k = k

        def to_dict(self):
            return {"predictions": [{"cell": i} for i in range(self.k)]}

    class FakeEngine:
        limits = Limits(max_top_k=3, max_embeddings=2)

        class geolocator:  # noqa: N801 (a stand-in namespace)
            ntotal = 10

        seen = []

        async def locate(self, xq, options):
            self.seen.append((xq.shape, options.k))
            return [FakeResult(options.k) for _ in xq]

    app = FastAPI(exception_handlers=HANDLERS)
    app.include_router(locate.router)
    fake = FakeEngine()
    app.dependency_overrides[get_engine] = lambda: fake
    c = TestClient(app)
    r = c.post("/v1/locate/embedding", json={"embeddings": [[1.0] * 512] * 2, "top_k": 3})
    assert r.status_code == 200 and [len(x["predictions"]) for x in r.json()["results"]] == [3, 3]
    assert fake.seen == [((2, 512), 3)]
    over = c.post("/v1/locate/embedding", json={"embeddings": [[1.0] * 512] * 3})
    assert over.status_code == 422 and "embeddings" in over.json()["error"]["message"]
    assert "at most 2 items, not 3 (this server's --max-embeddings)" in over.json()["error"]["message"]
    assert "--max-top-k" in c.post("/v1/locate/embedding", json={"embeddings": [[1.0] * 512], "top_k": 4}).text
    assert len(fake.seen) == 1  # refused before any search


def test_openapi_states_the_limits_and_the_refusals(settings):
    spec = create_app(replace(settings, embeddings_only=True)).openapi()
    body = spec["components"]["schemas"]["EmbeddingRequest"]["properties"]
    assert (body["embeddings"]["minItems"], body["embeddings"]["maxItems"]) == (1, settings.max_embeddings)
    assert body["embeddings"]["items"]["minItems"] == body["embeddings"]["items"]["maxItems"] == 512
    assert (body["top_k"]["minimum"], body["top_k"]["maximum"]) == (1, settings.max_top_k)
    answer = spec["components"]["schemas"]["EmbeddingsResponse"]["properties"]["embeddings"]
    assert "maxItems" not in answer  # an answer's list is not a request limit
    post = spec["paths"]["/v1/locate"]["post"]["responses"]
    assert {"200", "400", "408", "413", "415", "422", "503"} <= set(post)
    assert set(post["200"]["content"]) == {"application/json", "application/geo+json"}
    assert "404" in spec["paths"]["/v1/cells/{cell}"]["get"]["responses"]
    assert set(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}


def test_stalled_body_gets_408_and_the_server_keeps_serving(settings):
    """A client that sends headers and part of a body, then nothing: 408 after --body-timeout, on a
    real socket (uvicorn), and the next request is answered."""
    import socket
    import threading
    import time

    import uvicorn

    app = create_app(replace(settings, embeddings_only=True, body_timeout=0.5))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"POST /v1/locate/embedding HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      b"content-length: 5000\r\n\r\n{\"embeddings\": [[1.0, ")
            start = time.monotonic()
            reply = c.recv(65536).decode()
            waited = time.monotonic() - start
        assert reply.startswith("HTTP/1.1 408"), reply[:200]
        assert "--body-timeout" in reply and 0.4 < waited < 5
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.slow
def test_ready_means_warm_and_the_server_says_where_it_listens(built_r2):
    """`geoindex serve` with the tiny CLIP model: once the listening line is on stderr, /readyz is 200
    and the first photo query costs under 2x what later ones do (a ratio of this run's own times;
    the later cost is the median of three, so one scheduling hiccup on a busy machine is not it)."""
    import statistics
    import time

    import httpx

    code = "import sys\nfrom geoindex.cli.serve import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = subprocess.Popen([sys.executable, "-c", code, "--index", str(built_r2), "--clip-model", "tiny-test",
                             "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "listening on" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the server exited before listening"
        assert line.startswith("listening on http://127.0.0.1:") and "(page at /, API docs at /docs)" in line, line
        url = line.split()[2]
        with httpx.Client(base_url=url, timeout=60) as c:
            assert c.get("/readyz").json()["status"] == "ready"

            def query(color) -> float:
                began = time.perf_counter()
                r = c.post("/v1/locate", files={"images": ("p.jpg", jpeg(color=color), "image/jpeg")},
                           data={"top_k": "5", "confidence": "0.9"})
                assert r.status_code == 200, r.text
                return time.perf_counter() - began

            # the client's own first multipart encoding costs ~30 ms here: pay it on a route that does not exist
            assert c.post("/v1/none", files={"images": ("p.jpg", jpeg(), "image/jpeg")}).status_code == 404
            first = query((200, 30, 30))
            later = statistics.median(query((30, 200 - 40 * i, 30)) for i in range(3))
        assert first < 2 * later, (first, later)
    finally:
        proc.terminate()
        proc.wait(30)


def test_places_in_a_box_most_populous_first(client):
    r = client.get("/v1/places", params={"bbox": "1.5,48.3,3.5,49.3", "limit": 3})
    assert r.status_code == 200, r.text
    found = r.json()["places"]
    assert len(found) == 3 and found[0]["name"] == "Paris" and found[0]["country"] == "FR"
    assert [p["population"] for p in found] == sorted((p["population"] for p in found), reverse=True)
    assert all(48.3 <= p["lat"] <= 49.3 and 1.5 <= p["lng"] <= 3.5 for p in found)
    across = client.get("/v1/places", params={"bbox": "179,-20,-179,-15", "limit": 200}).json()["places"]
    assert across and all(abs(p["lng"]) >= 179 for p in across)  # Fiji, across the antimeridian
    bad = client.get("/v1/places", params={"bbox": "0,50,1,40"})
    assert bad.status_code == 422 and "s < n" in bad.json()["error"]["message"]
