"""The server's search path (issue 36): a query whose options searched in under a millisecond the
last time runs on the event loop, without the hop to the search thread; anything slower, or a first
sight of its options, goes to the search pool; the answers are the same either way."""

import asyncio
import threading

import numpy as np
import pytest

from geoindex.locate.options import QueryOptions
from geoindex.serve import engine as engine_module
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
