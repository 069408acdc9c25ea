"""int8 image tower: ONNX Runtime dynamic quantization of the exported fp32 graph, never the default.

Every ``MatMul`` and ``Gemm`` with a weight initializer becomes ``MatMulInteger`` (weights int8 per
tensor, activations quantized on the fly): the MLP layers, the head and the attention projections
(with the attention fast path off at export they are plain MatMuls, unlike torch's
``quantize_dynamic``, which cannot reach inside ``nn.MultiheadAttention``). The patch convolution
stays fp32 (ONNX Runtime's ConvInteger is slower than its fp32 Conv).

int8 error depends on the weights, so it is only used behind a self-check on the weights and the
index in use (:mod:`geoindex.locate.int8_check`). The quantized graph is cached beside the fp32
one (``<fp32 file>-int8-<sha16>.onnx`` + its record, the same writes and SHA-256 check).
"""

from __future__ import annotations

import logging
from pathlib import Path

from geoindex.encoders.onnx_tower import (
    DamagedCacheError,
    OnnxTower,
    onnxruntime,
    private_tmp,
    publish,
    read_cached,
    write_record,
)
from geoindex.errors import BackendError

log = logging.getLogger(__name__)

OP_TYPES = ["MatMul", "Gemm"]


def quantize(src: Path, dst: Path) -> None:
    """Write the dynamic int8 quantization of the ONNX graph ``src`` to ``dst``."""
    onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().disabled, was = True, logging.getLogger().disabled  # its pre-processing advice
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=OP_TYPES)
    except Exception as e:
        raise BackendError(f"int8 quantization of {src} failed ({type(e).__name__}: {str(e)[:300]}): "
                           "use --precision fp32") from e
    finally:
        logging.getLogger().disabled = was


def int8_tower(fp32: OnnxTower, threads: int | None = None) -> OnnxTower:
    """The int8 graph of the cached fp32 ``fp32`` tower (quantized on first use, then cached)."""
    stem = Path(fp32.record["file"]).stem + "-int8"
    record_path = fp32.path.with_name(f"{stem}.json")
    cached = read_cached(record_path, "int8 tower", "--precision fp32")
    if cached is not None:
        if cached[1].get("from_sha256") != fp32.record.get("sha256"):
            raise DamagedCacheError(f"the int8 record {record_path} was not made from {fp32.path.name}: delete it "
                                    "(the next run quantizes again), or use --precision fp32")
        return OnnxTower(*cached, threads)
    log.warning("quantizing %s to int8 (once per weights)", fp32.path.name)
    tmp = private_tmp(fp32.path.parent, stem)
    try:
        quantize(fp32.path, tmp)
        path, sha = publish(tmp, stem)
    finally:
        tmp.unlink(missing_ok=True)
    record = {**fp32.record, "precision": "int8", "file": path.name, "sha256": sha,
              "from_sha256": fp32.record.get("sha256"),
              "quantization": {"kind": "dynamic", "weights": "QInt8", "ops": OP_TYPES}}
    record.pop("check", None)  # the fp32 export check does not speak for int8
    write_record(record_path, record)
    return OnnxTower(path, record, threads)
