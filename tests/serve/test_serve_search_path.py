"""The server's search path (issue 36). A query whose options searched in under a millisecond the
last time runs on the event loop, without the hop to the search thread; anything slower, or a first
sight of its options, goes to the search pool; the answers are the same either way. A plain JSON
``POST /v1/locate/embedding`` takes the shortcut past FastAPI's request machinery
(:mod:`geoindex.serve.fastpath`): the same answers, and every refusal the route's own."""

import asyncio
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from geoindex.locate.options import QueryOptions
from geoindex.serve import engine as engine_module
from geoindex.serve.app import create_app
from geoindex.serve.engine import Engine
from geoindex.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def engine(built_r2):
    e = Engine(ServeSettings(index=str(built_r2), embeddings_only=True))
    yield e
    asyncio.run(e.close())


def where_searched(engine, xq, options):
    """(the answer's top cells, the name of the thread each geolocator.locate call ran on)."""
    threads = []
    real = engine.geolocator.locate

    def spy(*args, **kw):
        threads.append(threading.current_thread().name)
        return real(*args, **kw)

    engine.geolocator.locate = spy
    try:
        results = asyncio.run(engine.locate(xq, options))
    finally:
        del engine.geolocator.locate
    return [r.predictions[0].cell for r in results], threads


def queries(engine, n):
    from geoindex.encoders.location import encode_latlng

    geo = engine.geolocator
    rows = np.arange(n) * 7
    return encode_latlng(geo.encoder_reranker.model, np.column_stack((geo.table.lat[rows], geo.table.lng[rows])))


def test_a_fast_search_runs_inline_after_its_first_time(engine, monkeypatch):
    monkeypatch.setattr(engine_module, "INLINE_S", 10.0)  # whatever this machine's speed: "fast"
    xq, options = queries(engine, 1), QueryOptions(k=3)
    first, threads = where_searched(engine, xq, options)
    assert threads and all(t.startswith("search") for t in threads)  # options never seen: the pool times them
    again, threads = where_searched(engine, xq, options)
    assert threads == [threading.main_thread().name]  # asyncio.run's loop is this thread
    assert again == first


def test_a_slow_search_and_a_large_request_stay_on_the_pool(engine, monkeypatch):
    xq, options = queries(engine, 3), QueryOptions(k=4)
    monkeypatch.setattr(engine_module, "INLINE_S", 0.0)  # nothing is fast enough
    where_searched(engine, xq[:1], options)
    _, threads = where_searched(engine, xq[:1], options)
    assert all(t.startswith("search") for t in threads)
    monkeypatch.setattr(engine_module, "INLINE_S", 10.0)
    engine._per_query[options] = 4.0  # 3 queries at 4 s each: over the bound, however fast one is alone
    _, threads = where_searched(engine, xq, options)
    assert threads and all(t.startswith("search") for t in threads)


def test_the_timings_kept_are_bounded(engine, monkeypatch):
    monkeypatch.setattr(engine_module, "TIMED_OPTIONS", 4)
    xq = queries(engine, 1)
    for k in range(1, 9):
        where_searched(engine, xq, QueryOptions(k=k))
    assert len(engine._per_query) <= 4 and QueryOptions(k=8) in engine._per_query


@pytest.fixture(scope="module")
def client(built_r2):
    settings = ServeSettings(index=str(built_r2), embeddings_only=True, max_embeddings=4, max_request_bytes=200_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def shortcut_calls(monkeypatch):
    """The requests the shortcut parsed (it imports the route's parser at each request)."""
    from geoindex.serve.routes import locate

    calls = []
    real = locate.embedding_request

    def spy(engine, data):
        calls.append(len(data))
        return real(engine, data)

    monkeypatch.setattr(locate, "embedding_request", spy)
    return calls


def test_the_shortcut_answers_as_the_route_does(client, shortcut_calls):
    xq = queries(client.app.state.engine, 3)
    body = {"embeddings": xq.tolist(), "top_k": 4, "country": ["FR", "US"], "confidence": 0.8}
    short = client.post("/v1/locate/embedding", json=body)
    assert shortcut_calls and short.status_code == 200
    shortcut_calls.clear()
    route = client.post("/v1/locate/embedding?format=json", json=body)  # a query string: the route itself
    assert not shortcut_calls and route.status_code == 200
    assert short.json() == route.json() and short.headers["content-type"] == route.headers["content-type"]
    metrics = client.get("/metrics").text
    assert 'geoindex_http_requests_total{method="POST",route="/v1/locate/embedding",status="200"}' in metrics


@pytest.mark.parametrize("body", [
    b'{"embeddings": [[1.0, 2.0]]}',  # 2 numbers, not 512
    b'{"embeddings": [[NaN, 1]]}',  # not JSON
    b'{"embeddings": [' + b",".join([b"[" + b",".join([b"0"] * 512) + b"]"]) + b"]}",  # all zero
    b'{"embeddings": [' + b",".join([b"[" + b",".join([b"1"] * 512) + b"]"] * 5) + b"]}",  # over --max-embeddings
    b'{"embeddings": [[' + b",".join([b"1"] * 512) + b']], "top_k": 101}',  # over --max-top-k
    b'{"embeddings": [[' + b",".join([b"1"] * 512) + b']], "top_k": "5"}',  # a string
    b'{"embeddings": [[' + b",".join([b"1"] * 512) + b']], "cells": ["8a2a1072b59ffff"]}',  # finer than the index
    b'[1, 2]',
    b'',
])
def test_a_refusal_is_the_routes_own(client, shortcut_calls, body):
    headers = {"content-type": "application/json"}
    short = client.post("/v1/locate/embedding", content=body, headers=headers)
    assert shortcut_calls  # it went in the shortcut, and came out through the route
    route = client.post("/v1/locate/embedding?format=json", content=body, headers=headers)
    assert 400 <= short.status_code < 500 and short.status_code == route.status_code
    assert short.json() == route.json()


def test_a_chunked_body_over_the_limit_gets_413_in_the_routes_words(client, shortcut_calls):
    def chunks():
        for _ in range(30):
            yield b"[" * 10_000  # no content-length: the limit is met while the body streams

    r = client.post("/v1/locate/embedding", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "fewer embeddings" in r.json()["error"]["message"]
    assert client.get("/healthz").status_code == 200


def test_the_route_asks_for_nothing_the_shortcut_skips():
    """The shortcut answers without FastAPI's dependency solving: a dependency added to the route
    later (a key check, a rate limit, a new query parameter) would be skipped silently for the
    common request. This pins what the route asks for, so adding one fails here first: teach
    ``serve/fastpath.py`` the new step (or make ``_takes`` leave such requests to the route)."""
    from geoindex.serve import fastpath
    from geoindex.serve.routes import locate

    route = next(r for r in locate.router.routes if r.path == fastpath.PATH)
    dependant = route.dependant
    assert [d.call.__name__ for d in dependant.dependencies] == ["get_engine"]
    assert sorted(p.name for p in dependant.query_params) == ["format"]  # any query string goes to the route
    assert [p.name for p in dependant.body_params] == ["body"]
    assert not dependant.header_params and not dependant.cookie_params and not route.dependencies
