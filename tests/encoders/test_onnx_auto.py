"""--backend auto decided by measurement: torch and ONNX Runtime timed at export, the decision cached."""

import json
import logging

import pytest

pytest.importorskip("onnxruntime")

from geoindex.encoders import onnx_tower  # noqa: E402
from geoindex.encoders.clip import load_image_encoder  # noqa: E402


def _record(cache):
    [path] = cache.glob("*.json")
    return json.loads(path.read_text())


def test_auto_times_both_at_export_and_logs_both_numbers(fresh_cache, caplog):
    with caplog.at_level(logging.WARNING, logger="geoindex.encoders.onnx_tower"):
        enc = load_image_encoder("tiny-test", device="cpu", backend="auto")
    timing = _record(fresh_cache)["timing"]
    assert timing["probes"] == onnx_tower.PROBE_N and timing["repeats"] == onnx_tower.AUTO_REPEATS
    assert len(timing["runs"]["torch"]) == len(timing["runs"]["onnx"]) == onnx_tower.AUTO_REPEATS
    assert timing["torch_s"] > 0 and timing["onnx_s"] > 0
    assert enc.backend == timing["auto"]  # whichever was faster here, the encoder runs it
    assert f"torch {timing['torch_s']:.3f} s, ONNX Runtime {timing['onnx_s']:.3f} s" in caplog.text
    assert "measured now" in caplog.text


def test_a_slower_onnx_leaves_auto_on_torch_and_the_decision_is_reused(fresh_cache, monkeypatch, caplog):
    monkeypatch.setattr(onnx_tower, "AUTO_MARGIN", 1e9)  # no graph is a billion times faster: torch wins
    enc = load_image_encoder("tiny-test", device="cpu", backend="auto")
    assert (enc.backend, enc.tower) == ("torch", None)
    timing = _record(fresh_cache)["timing"]
    assert timing["auto"] == "torch" and timing["margin"] == 1e9

    def no_timing(*a, **k):
        raise AssertionError("timed again: the cached decision was not used")

    monkeypatch.setattr(onnx_tower, "time_backends", no_timing)
    monkeypatch.setattr(onnx_tower, "AUTO_MARGIN", 1.0)  # a later run's setting does not re-decide either
    with caplog.at_level(logging.WARNING, logger="geoindex.encoders.onnx_tower"):
        again = load_image_encoder("tiny-test", device="cpu", backend="auto")
    assert again.backend == "torch" and "cached" in caplog.text
    assert f"torch {timing['torch_s']:.3f} s, ONNX Runtime {timing['onnx_s']:.3f} s" in caplog.text
    forced = load_image_encoder("tiny-test", device="cpu", backend="onnx")  # asked for: onnx, whatever auto says
    assert forced.backend == "onnx" and forced.tower is not None


def test_a_faster_onnx_is_kept_and_reused(fresh_cache, monkeypatch):
    monkeypatch.setattr(onnx_tower, "AUTO_MARGIN", 0.0)  # any time at all: ONNX Runtime wins
    assert load_image_encoder("tiny-test", device="cpu", backend="auto").backend == "onnx"
    monkeypatch.setattr(onnx_tower, "AUTO_MARGIN", 1e9)
    monkeypatch.setattr(onnx_tower, "time_backends", lambda *a, **k: pytest.fail("timed again"))
    assert load_image_encoder("tiny-test", device="cpu", backend="auto").backend == "onnx"
    assert _record(fresh_cache)["timing"]["auto"] == "onnx"


def test_a_record_without_timing_is_timed_once_under_auto(fresh_cache, monkeypatch):
    monkeypatch.setattr(onnx_tower, "AUTO_MARGIN", 0.0)
    load_image_encoder("tiny-test", device="cpu", backend="onnx")
    [path] = fresh_cache.glob("*.json")
    record = json.loads(path.read_text())
    del record["timing"]
    path.write_text(json.dumps(record))
    assert load_image_encoder("tiny-test", device="cpu", backend="auto").backend == "onnx"
    assert _record(fresh_cache)["timing"]["auto"] == "onnx"


def test_int8_under_auto_still_gets_its_fp32_graph(fresh_cache, monkeypatch):
    monkeypatch.setattr(onnx_tower, "AUTO_MARGIN", 1e9)  # auto would pick torch; int8 is ONNX Runtime's anyway
    enc = load_image_encoder("tiny-test", device="cpu", backend="auto", precision="int8")
    assert enc.tower is not None and enc.int8_tower is not None
