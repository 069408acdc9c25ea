"""The ONNX Runtime image tower (--backend onnx): same answers as torch, checked export, guarded cache."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")

from geoindex.encoders import onnx_tower  # noqa: E402
from geoindex.encoders.clip import load_image_encoder  # noqa: E402
from geoindex.errors import BackendError, InvalidArgumentError  # noqa: E402


def _photos(n=6):
    rng = np.random.default_rng(36)
    return [Image.fromarray(rng.integers(0, 256, (80 + 7 * i, 120 - 5 * i, 3), dtype=np.uint8)) for i in range(n)]


def test_onnx_gives_the_same_top1_as_torch(flat_r2, tmp_path, capsys):
    from geoindex.cli import main
    from geoindex.locate.geolocator import Geolocator

    photos = _photos()
    torch_enc = load_image_encoder("tiny-test", device="cpu", backend="torch")
    onnx_enc = load_image_encoder("tiny-test", device="cpu", backend="onnx")
    assert (torch_enc.backend, onnx_enc.backend) == ("torch", "onnx")
    xt, xo = torch_enc.encode_images(photos), onnx_enc.encode_images(photos)
    assert np.all((xt * xo).sum(1) >= 0.99999) and np.abs(xt - xo).max() < 1e-4
    geo = Geolocator(flat_r2)
    top = [[r.predictions[0].cell for r in geo.locate(x)] for x in (xt, xo)]
    assert top[0] == top[1]
    # the flag, end to end: torch's top-1 cells from the command line
    paths = []
    for i, im in enumerate(photos[:3]):
        paths.append(str(tmp_path / f"p{i}.png"))
        im.save(paths[-1])
    assert main(["locate", *paths, "--index", str(flat_r2), "--clip-model", "tiny-test", "--device", "cpu",
                 "--backend", "onnx", "--format", "json", "-k", "1"]) == 0
    assert [q["predictions"][0]["cell"] for q in json.loads(capsys.readouterr().out)] == top[0][:3]


def test_auto_is_onnx_on_the_cpu_and_bad_choices_are_refused():
    assert onnx_tower.choose("auto", torch.device("cpu")) == "onnx"
    assert onnx_tower.choose("auto", torch.device("cuda")) == "torch"
    with pytest.raises(InvalidArgumentError, match="--backend onnx runs on the CPU.*--backend torch"):
        onnx_tower.choose("onnx", torch.device("cuda"))
    with pytest.raises(InvalidArgumentError, match="'tensorrt' is not one of auto, torch, onnx"):
        load_image_encoder("tiny-test", device="cpu", backend="tensorrt")


def test_export_is_cached_and_a_tampered_file_is_refused(fresh_cache):
    enc = load_image_encoder("tiny-test", device="cpu", backend="onnx")
    [graph] = fresh_cache.glob("*.onnx")
    [record_path] = fresh_cache.glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["check"]["cosine_min"] >= onnx_tower.COSINE_MIN and record["opset"] == onnx_tower.OPSET
    assert record["file"] == graph.name and graph.name.startswith(record_path.stem)
    before = graph.stat().st_mtime_ns
    assert load_image_encoder("tiny-test", device="cpu", backend="onnx").backend == "onnx"
    assert graph.stat().st_mtime_ns == before  # read from the cache, not exported again
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    for backend in ("onnx", "auto"):  # a damaged cache is an error either way
        with pytest.raises(onnx_tower.DamagedCacheError, match=f"{graph.name} has SHA-256 .*delete"):
            load_image_encoder("tiny-test", device="cpu", backend=backend)
    assert enc.tower is not None


def test_a_failed_export_check_refuses_onnx_with_the_numbers(fresh_cache, monkeypatch, caplog):
    monkeypatch.setattr(onnx_tower, "COSINE_MIN", 1.5)  # no export can pass: the refusal path
    with pytest.raises(BackendError, match=r"cosine min 1\.0000000 < 1\.5 \(max abs diff .*--backend torch"):
        load_image_encoder("tiny-test", device="cpu", backend="onnx")
    assert not list(fresh_cache.glob("*.onnx")) and not list(fresh_cache.glob(".*"))  # nothing half-written kept
    with caplog.at_level(logging.WARNING, logger="geoindex.encoders.onnx_tower"):
        enc = load_image_encoder("tiny-test", device="cpu", backend="auto")
    assert enc.backend == "torch" and "falling back to torch" in caplog.text
