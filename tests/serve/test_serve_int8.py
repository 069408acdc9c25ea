"""``geoindex serve --precision int8``: the same guarded self-check as locate, at start, shown in /v1/index."""

import pytest

pytest.importorskip("onnxruntime")

from geoindex.encoders import onnx_int8  # noqa: E402
from geoindex.errors import BackendError, InvalidArgumentError  # noqa: E402
from geoindex.locate import int8_check  # noqa: E402
from tests.helpers.int8 import Scrambled  # noqa: E402
from geoindex.serve.settings import ServeSettings  # noqa: E402


def _settings(index, **kw):
    return ServeSettings(index=str(index), clip_model="tiny-test", device="cpu", precision="int8", **kw)


def test_serve_int8_passes_its_check_and_says_so(fresh_cache, flat_r2, probe_dir):
    from fastapi.testclient import TestClient

    from geoindex.serve.app import Engine, create_app

    settings = _settings(flat_r2, int8_probe=str(probe_dir), int8_min_agreement=1e-9)
    engine = Engine(settings)
    assert engine.encoder.backend == "onnx-int8" and engine.encoder.tower is engine.encoder.int8_tower
    with TestClient(create_app(settings, engine)) as client:
        info = client.get("/v1/index").json()["image_encoder"]
    assert (info["clip_model"], info["backend"], info["precision"]) == ("tiny-test", "onnx-int8", "int8")
    assert info["int8_check"]["probes"] == int8_check.MIN_PROBES and "top1_agreement" in info["int8_check"]
    # the check is cached with the index: a restart needs no probes
    again = Engine(_settings(flat_r2, int8_min_agreement=1e-9))
    assert again.int8_check["top1_agreement"] == info["int8_check"]["top1_agreement"]


def test_serve_int8_is_refused_below_the_agreement(fresh_cache, flat_r2, probe_dir, monkeypatch, capsys):
    from geoindex.cli import main

    real = onnx_int8.int8_tower

    def scrambled(fp32, threads=None):  # an int8 graph that lost the weights' meaning
        tower = real(fp32, threads)
        return Scrambled(tower)

    monkeypatch.setattr(onnx_int8, "int8_tower", scrambled)
    args = ["serve", "--index", str(flat_r2), "--clip-model", "tiny-test", "--device", "cpu", "--precision", "int8"]
    assert main([*args, "--int8-probe", str(probe_dir), "--int8-min-agreement", "0.99"]) == 2
    err = capsys.readouterr().err
    assert "int8 refused for these weights on this index: top-1 cell agreement" in err
    assert "below --int8-min-agreement 0.99: use --precision fp32" in err


def test_serve_int8_without_probes_is_refused_at_start(fresh_cache, flat_r2):
    from geoindex.serve.app import Engine

    with pytest.raises(InvalidArgumentError, match="pass --int8-probe DIR"):
        Engine(_settings(flat_r2))
    with pytest.raises((InvalidArgumentError, BackendError), match="ONNX Runtime's"):
        Engine(ServeSettings(index=str(flat_r2), clip_model="tiny-test", device="cpu", precision="int8",
                             backend="torch"))
