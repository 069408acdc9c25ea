"""--precision int8: ONNX Runtime dynamic quantization, used only behind its self-check."""

import json

import pytest
from PIL import Image

pytest.importorskip("onnxruntime")

from geoindex.locate import int8_check  # noqa: E402
from tests.helpers.int8 import Scrambled  # noqa: E402
from geoindex.encoders.clip import load_image_encoder  # noqa: E402
from geoindex.errors import BackendError  # noqa: E402


def test_the_self_check_refuses_int8_below_the_agreement(fresh_cache, flat_r2, probe_dir):
    from geoindex.locate.geolocator import Geolocator

    geo = Geolocator(flat_r2)
    enc = load_image_encoder("tiny-test", device="cpu", precision="int8")
    assert enc.backend == "onnx" and enc.int8_tower is not None  # fp32 until the check passes
    quantized = {n.op_type for n in __import__("onnx").load(str(enc.int8_tower.path)).graph.node}
    assert "MatMulInteger" in quantized  # the MatMuls (attention projections included) are int8
    enc.int8_tower = Scrambled(enc.int8_tower)
    probes = [Image.open(p).convert("RGB") for p in sorted(probe_dir.iterdir())]
    with pytest.raises(BackendError, match=r"top-1 cell agreement 0\.\d+ on 8 probe photos, median [\d.]+ km moved"
                                           r".*below --int8-min-agreement 0\.98: use --precision fp32"):
        int8_check.guard(enc, geo, lambda: probes)
    assert enc.backend == "onnx" and enc.tower is not enc.int8_tower
    # the result is cached with the weights: a second run does not encode the probes again
    check = int8_check.guard(enc, geo, lambda: pytest.fail("probes read again"), min_agreement=0.0)
    assert check["top1_agreement"] < 0.98 and enc.backend == "onnx-int8"


def test_int8_from_the_command_line(fresh_cache, flat_r2, probe_dir, capsys, caplog):
    import logging

    from geoindex.cli import main

    photos = [str(p) for p in sorted(probe_dir.iterdir())[:2]]
    base = ["locate", *photos, "--index", str(flat_r2), "--clip-model", "tiny-test", "--device", "cpu",
            "--format", "json", "-k", "1"]
    assert main([*base, "--precision", "int8", "--backend", "torch"]) == 2
    assert "--precision int8 is ONNX Runtime's" in capsys.readouterr().err
    assert main([*base, "--precision", "int8"]) == 2  # two photos: too few to check on
    assert "at least 8 photos" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING, logger="geoindex.locate.int8_check"):
        assert main([*base, "--precision", "int8", "--int8-probe", str(probe_dir), "--int8-min-agreement", "0"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert "int8 self-check passed: top-1 cell agreement" in caplog.text
