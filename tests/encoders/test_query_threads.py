"""Query-time location encoding (refinement) runs on one torch thread, in the calling thread only."""

import threading

import numpy as np
import torch

from geoindex.encoders import location


def test_small_work_runs_on_one_thread_and_restores_the_setting(monkeypatch):
    torch.set_num_threads(2)
    seen, started, inside = {}, threading.Event(), threading.Event()

    def encoder_thread():  # a thread already running (a server's image encoder)
        torch.get_num_threads()
        started.set()
        inside.wait(10)
        seen["other"] = torch.get_num_threads()

    other = threading.Thread(target=encoder_thread)
    other.start()
    started.wait(10)
    with location.small_work_threads(100):
        seen["inside"] = torch.get_num_threads()
        inside.set()
        other.join()
    assert seen["inside"] == 1 and torch.get_num_threads() == 2
    assert seen["other"] == 2  # per thread: the running encoder keeps its threads meanwhile
    with location.small_work_threads(location.SMALL_WORK_POINTS + 1):
        assert torch.get_num_threads() == 2  # large batches keep every thread
    monkeypatch.setattr(location, "SMALL_WORK_THREADS", 0)
    with location.small_work_threads(100):
        assert torch.get_num_threads() == 2


def test_refinement_encodes_on_one_thread(built_r2, monkeypatch):
    from geoindex import Geolocator, QueryOptions

    geo = Geolocator(built_r2)
    xq = location.encode_latlng(geo.encoder_reranker.model, np.array([[48.85, 2.29]]))
    threads = []
    model = geo.encoder_reranker.model
    real = type(model).branches

    def spy(self, *a, **kw):
        threads.append(torch.get_num_threads())
        return real(self, *a, **kw)

    monkeypatch.setattr(type(model), "branches", spy)
    torch.set_num_threads(2)
    [result] = geo.locate(xq, QueryOptions(k=1, search="refine=1"))
    assert threads and set(threads) == {1} and torch.get_num_threads() == 2
    assert result.predictions[0].probability > 0
