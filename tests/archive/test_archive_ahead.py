"""archive.pipeline.ahead: the model and the search one batch ahead of the writer, in order."""

import threading
import time

import pytest

from geoindex.archive.pipeline import ahead


def test_results_come_in_order_and_overlap_the_consumer():
    threads, started = set(), []

    def work(i):
        threads.add(threading.current_thread().name)
        started.append(i)
        time.sleep(0.02 if i % 2 else 0.0)
        return i * 10

    got = []
    for r in ahead(range(6), work):
        got.append(r)
        time.sleep(0.03)  # the consumer writing rows: the next item is already being worked on
        assert len(started) >= min(6, len(got) + 1)
    assert got == [0, 10, 20, 30, 40, 50]
    assert threads and all(t.startswith("encode") for t in threads)


def test_an_error_is_raised_in_order_and_nothing_runs_after_the_consumer_stops():
    done = []

    def work(i):
        if i == 2:
            raise ValueError("bad batch 2")
        done.append(i)
        return i

    got = []
    with pytest.raises(ValueError, match="bad batch 2"):
        for r in ahead(range(100), work):
            got.append(r)
    assert got == [0, 1] and max(done) <= 3  # at most one item beyond the failed one was worked on
