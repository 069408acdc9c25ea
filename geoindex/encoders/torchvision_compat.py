"""Import torchvision next to a CPU-only torch whose matching torchvision is a CUDA build.

open_clip imports torchvision for its image transforms (``Resize``, ``CenterCrop``,
``Normalize``, ``InterpolationMode``: Python on PIL images and tensors). PyPI has no CPU build of
torchvision: its Linux wheels link their compiled operators (``_C.so``) against
``libtorch_cuda``, which a CPU-only torch (pytorch.org's ``+cpu`` wheels, as this project's build
machines have) does not ship. torchvision then skips its operators, as it is meant to, but
releases 0.2x still register fake kernels for two of them (``torchvision::nms``, ``::qnms``)
unconditionally, and ``import torchvision`` fails with "operator torchvision::nms does not exist".

:func:`import_torchvision` declares those two operator schemas when, and only when, that happens,
then imports again. Nothing gains a kernel: ``torchvision.ops.nms`` and every other compiled
operator still raise torchvision's own "Couldn't load custom C++ ops" error, and open_clip's
transforms, which need none of them, work. With a torchvision whose operators load (a CUDA
torch, or a CPU build of both) this is a plain import.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType

log = logging.getLogger(__name__)

# the schemas of torchvision's csrc/ops/nms.cpp and qnms (quantized), as its TORCH_LIBRARY declares them
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # the torch.library.Library holding the declarations: it must outlive the process


def import_torchvision() -> ModuleType:
    """``import torchvision``, declaring its unloadable operators' schemas when that is all it lacks."""
    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::" not in str(e) or "does not exist" not in str(e):
            raise
        _declare_missing_ops()
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        import torchvision

        log.info("torchvision %s without its compiled operators (they need a CUDA torch here); "
                 "image transforms only", torchvision.__version__)
    return torchvision


def _declare_missing_ops() -> None:
    global _library
    import torch

    if _library is None:
        _library = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _SCHEMAS.items():
        if not hasattr(torch.ops.torchvision, name):
            _library.define(schema)
