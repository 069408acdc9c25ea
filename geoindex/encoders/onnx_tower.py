"""The CLIP image tower + GeoCLIP head on ONNX Runtime (CPU): the same embeddings as torch.

Whether it is faster depends on the CPU and its load (issue 36, ViT-L/14 shape, 2-core AMD EPYC):
1.06x torch at batch 1 and 0.97x at batch 8 on a quiet machine, 1.4-1.8x at batch 1 on a busy one,
where torch slows more; so ``auto`` measures both on this machine at export (below). The tower and
the head are exported together, once per (model, weights digest, opset), into the user's cache
(:func:`cache_dir`):

    <cache>/onnx/<model>-<digest>-opset<N>-<sha16>.onnx   the graph, pixels (n, 3, S, S) -> (n, 512) L2-normalised
    <cache>/onnx/<model>-<digest>-opset<N>.json           its file name and SHA-256, the export check and timing

Each file is written under a private temporary name and renamed into place, the graph (named by its
own SHA-256) before the record that names it, so a reader sees a whole pair or none, even while
another process exports the same tower. At export the graph is run against torch on a fixed probe batch and
refused below :data:`COSINE_MIN` (its numbers in the error); a cached graph whose SHA-256 is not its
record's is refused (the fix: delete it, the next run exports it again). ``backend``:

* ``torch``: torch eager (fp16 on CUDA);
* ``onnx``: ONNX Runtime on the CPU (a CUDA device is refused: use torch there);
* ``auto`` (the default): torch on CUDA or without onnxruntime; on the CPU, whichever of the two was
  faster when the graph was exported. At export both run the probe batch :data:`AUTO_REPEATS` times,
  interleaved; the medians and the decision are kept in the record (``timing``), so later runs read
  the decision instead of timing again, and the log names both numbers. ONNX Runtime is kept only
  when at least :data:`AUTO_MARGIN` times faster: it holds a second copy of the weights beside
  torch's (texts run in torch). An export that fails or disagrees falls back to torch with a warning
  (a damaged cache file does not: it is an error either way).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import statistics
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geoindex.errors import BackendError, InvalidArgumentError, MissingDependencyError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
CACHE_ENV = "GEOINDEX_CACHE_DIR"  # overrides the cache folder (tests point it at a tmp dir)
OPSET = 17
COSINE_MIN = 0.99999  # export check: every probe embedding at least this close to torch's
PROBE_SEED, PROBE_N = 36, 3
AUTO_REPEATS = 3  # interleaved torch/ONNX Runtime runs of the probe batch at export; the medians decide
AUTO_MARGIN = 1.05  # auto keeps ONNX Runtime only when at least this much faster than torch


class DamagedCacheError(BackendError):
    """A cached ONNX graph whose SHA-256 is not its record's: refused under every backend choice."""


def cache_dir() -> Path:
    """``$GEOINDEX_CACHE_DIR``, else ``$XDG_CACHE_HOME/geoindex``, else ``~/.cache/geoindex``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "geoindex"


def onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise MissingDependencyError("--backend onnx needs ONNX Runtime: run `pip install onnxruntime onnx`") from e
    return ort


def available() -> bool:
    try:
        import onnx  # noqa: F401  the exporter writes through it
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def choose(backend: str, device: torch.device) -> str:
    """``torch`` or ``onnx`` for a requested ``backend`` on ``device``; InvalidArgumentError for a
    bad name or onnx on CUDA, MissingDependencyError for onnx without onnxruntime."""
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}: use auto (the default)")
    if backend == "auto":
        return "onnx" if device.type == "cpu" and available() else "torch"
    if backend == "onnx" and device.type != "cpu":
        raise InvalidArgumentError(f"--backend onnx runs on the CPU, but the device is {device}: "
                                   "use --backend torch on CUDA (fp16), or --device cpu")
    if backend == "onnx":
        onnxruntime()
    return backend


def weights_digest(*modules: nn.Module) -> str:
    """SHA-256 (hex) of every parameter and buffer of ``modules``: names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for module in modules:
        for name, t in sorted(module.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


class TowerHead(nn.Module):
    """pixels (n, 3, S, S) float32 -> (n, 512) float32, L2-normalised: CLIP image tower, GeoCLIP head."""

    def __init__(self, clip: nn.Module, head: nn.Module):
        super().__init__()
        self.clip, self.head = clip, head

    def forward(self, pixels):
        return nn.functional.normalize(self.head(self.clip.encode_image(pixels).float()), dim=1)


def probe_pixels(size: int, n: int = PROBE_N) -> torch.Tensor:
    """A fixed (n, 3, size, size) float32 batch in CLIP's normalised pixel range (seeded)."""
    g = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randn(n, 3, size, size, generator=g)


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Row-wise cosine (min) and max |a - b| of two (n, d) float arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"cosine_min": float(cos.min()), "max_abs_diff": float(np.abs(a - b).max())}


class OnnxTower:
    """An ONNX Runtime session over an exported :class:`TowerHead`; ``tower(pixels)`` with pixels an
    (n, 3, S, S) float32 array gives (n, 512) float32, L2-normalised."""

    def __init__(self, path: Path, record: dict, threads: int | None = None):
        ort = onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle threads sleep instead of spinning: measured 1.12x (batch 1) and 1.18x (batch 8) faster on a
        # busy 2-core machine, where spinning threads take cycles from the decoders and other processes,
        # and 1.06x / 1.07x on a mostly quiet one (benchmarks/bench_onnx_fp32.py, groups b and c)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path, self.record, self.threads = path, record, opts.intra_op_num_threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input: np.ascontiguousarray(pixels, np.float32)})[0]
        return np.asarray(out, np.float32)


def cache_key(model: str, digest: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', model)}-{digest[:16]}-opset{OPSET}"


def export(module: nn.Module, path: Path, size: int) -> None:
    """Write ``module`` (pixels -> embeddings) as ONNX at ``path``, the batch dimension dynamic.
    The attention fast path is off while exporting: the exporter has no symbolic for
    ``aten::_native_multi_head_attention``."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: fine
            torch.onnx.export(module, (probe_pixels(size, 2),), str(path), input_names=["pixels"],
                              output_names=["embeddings"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={"pixels": {0: "n"}, "embeddings": {0: "n"}})
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


def load_tower(clip: nn.Module, head: nn.Module, model: str, size: int, threads: int | None = None,
               backend: str = "onnx") -> OnnxTower | None:
    """The cached, checked ONNX graph of ``clip``'s image tower + ``head`` (exported, checked and
    timed against torch on first use). ``backend`` ``auto``: None when torch was the faster at
    export (the record's ``timing``), without loading the graph into ONNX Runtime.

    Raises:
        BackendError: the export failed, its output is below :data:`COSINE_MIN` against torch on
            the probe batch (the numbers in the message), or the cached file's SHA-256 is not its
            record's (damaged or replaced: delete it to export again).
    """
    return load_graph(TowerHead(clip, head).eval(), weights_digest(clip, head), model, size, threads, backend)


def load_graph(module: nn.Module, digest: str, model: str, size: int, threads: int | None = None,
               backend: str = "onnx", part: str = "") -> OnnxTower | None:
    """:func:`load_tower` for any ``module`` of pixels (n, 3, S, S): its weights' ``digest`` and the
    cache key's ``part`` (``""`` for the tower + head, ``"-features"`` for the tower alone) name it."""
    onnxruntime()
    folder = cache_dir() / "onnx"
    key = cache_key(model, digest) + part
    record_path = folder / f"{key}.json"
    cached = read_cached(record_path, "ONNX tower", "--backend torch")
    if cached is not None:
        path, record = cached
        log.info("ONNX tower %s (export check: cosine min %.7f)", path, record["check"]["cosine_min"])
        if backend == "auto" and "timing" in record:
            log_decision(record["timing"], model, "measured at export, cached")
            return OnnxTower(path, record, threads) if record["timing"]["auto"] == "onnx" else None
        tower = OnnxTower(path, record, threads)
        if backend == "auto":  # a record from before the timing: time once, keep it
            tower.record = record = {**record, "timing": time_backends(module, tower, size)}
            write_record(record_path, record)
            return decide(tower, model)
        return tower
    tower = export_checked(module, model, size, digest, folder, key, threads)
    write_record(record_path, tower.record)
    return decide(tower, model) if backend == "auto" else tower


def export_checked(module: nn.Module, model: str, size: int, digest: str, folder: Path, key: str,
                   threads: int | None) -> OnnxTower:
    """Export ``module``, check it against torch (refused below :data:`COSINE_MIN`), time both, and
    publish the graph in ``folder``; the tower, its record (not yet written) in ``tower.record``."""
    folder.mkdir(parents=True, exist_ok=True)
    log.warning("exporting the %s image tower to ONNX (once per weights) into %s", model, folder)
    tmp = private_tmp(folder, key)
    try:
        try:
            export(module, tmp, size)
        except Exception as e:  # exporter versions differ in what they cannot trace
            raise BackendError(f"ONNX export of the {model} image tower failed ({type(e).__name__}: "
                               f"{str(e).strip()[:300]}): use --backend torch") from e
        tower = OnnxTower(tmp, {}, threads)
        check = verify(module, tower, size)
        if check["cosine_min"] < COSINE_MIN:
            raise BackendError(
                f"the ONNX export of {model} disagrees with torch on the probe batch: cosine min "
                f"{check['cosine_min']:.7f} < {COSINE_MIN} (max abs diff {check['max_abs_diff']:.2e}); "
                "refusing --backend onnx: use --backend torch")
        timing = time_backends(module, tower, size)
        tower.path, sha = publish(tmp, key)
    finally:
        tmp.unlink(missing_ok=True)
    tower.record = {"model": model, "weights_sha256": digest, "opset": OPSET,
                    "file": tower.path.name, "sha256": sha, "check": check, "timing": timing,
                    "torch": torch.__version__, "onnxruntime": onnxruntime().__version__}
    log.warning("ONNX tower checked against torch: cosine min %.7f, max abs diff %.2e (%d probes)",
                check["cosine_min"], check["max_abs_diff"], check["probes"])
    return tower


def time_backends(module: nn.Module, tower: OnnxTower, size: int, repeats: int | None = None) -> dict:
    """torch (``module``) and ONNX Runtime (``tower``) on the probe batch, ``repeats`` times each,
    interleaved (both warmed up first); seconds a batch, the medians, and ``auto``: the faster one
    (ONNX Runtime only when at least :data:`AUTO_MARGIN` times faster)."""
    repeats = repeats or AUTO_REPEATS
    pixels = probe_pixels(size)
    x = pixels.numpy()
    runs: dict[str, list[float]] = {"torch": [], "onnx": []}
    with torch.inference_mode():
        module(pixels), tower(x)
        for _ in range(repeats):
            for name, fn in (("torch", lambda: module(pixels)), ("onnx", lambda: tower(x))):
                t = time.perf_counter()
                fn()
                runs[name].append(time.perf_counter() - t)
    torch_s, onnx_s = statistics.median(runs["torch"]), statistics.median(runs["onnx"])
    return {"torch_s": torch_s, "onnx_s": onnx_s, "probes": int(pixels.shape[0]), "repeats": repeats,
            "threads": tower.threads, "margin": AUTO_MARGIN,
            "auto": "onnx" if torch_s >= AUTO_MARGIN * onnx_s else "torch", "runs": runs}


def log_decision(timing: dict, model: str, how: str) -> None:
    log.warning("--backend auto: %s for the %s image tower: torch %.3f s, ONNX Runtime %.3f s a probe batch of %d "
                "(%.2fx; median of %d, %s; ONNX Runtime needs %.2fx)", "ONNX Runtime" if timing["auto"] == "onnx"
                else "torch", model, timing["torch_s"], timing["onnx_s"], timing["probes"],
                timing["torch_s"] / timing["onnx_s"], timing["repeats"], how, timing["margin"])


def decide(tower: OnnxTower, model: str) -> OnnxTower | None:
    """``tower`` when its record's timing says ONNX Runtime was the faster, else None (torch)."""
    log_decision(tower.record["timing"], model, "measured now")
    return tower if tower.record["timing"]["auto"] == "onnx" else None


# -- the cache: graphs named by their own SHA-256, records pointing at them ----------------------------
# Two processes exporting at once (two archives, serve workers) each write a private temporary and
# publish the graph under a name that holds its digest, then the record naming it: a reader always
# finds a record and the very file it describes, whichever writer renamed last.
def private_tmp(folder: Path, stem: str) -> Path:
    return folder / f".{stem}.{os.getpid()}-{threading.get_ident()}.tmp"


def publish(tmp: Path, stem: str) -> tuple[Path, str]:
    """Rename ``tmp`` to ``<stem>-<sha16>.onnx`` beside it; (that path, its SHA-256)."""
    sha = file_sha256(tmp)
    path = tmp.with_name(f"{stem}-{sha[:16]}.onnx")
    os.replace(tmp, path)
    return path, sha


def write_record(record_path: Path, record: dict) -> None:
    tmp = private_tmp(record_path.parent, record_path.stem)
    try:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, record_path)
    finally:
        tmp.unlink(missing_ok=True)


def read_cached(record_path: Path, what: str, fix: str) -> tuple[Path, dict] | None:
    """(graph path, record) from the cache, its SHA-256 checked; None when there is no record.

    Raises:
        DamagedCacheError: the record is unreadable, its file is missing, or the file's SHA-256
            is not the record's.
    """
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        path = record_path.parent / record["file"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DamagedCacheError(f"the cache record {record_path} is unreadable ({e}): delete it (the next run "
                                f"exports again), or use {fix}") from e
    actual = file_sha256(path) if path.is_file() else "missing"
    if actual != record.get("sha256"):
        raise DamagedCacheError(
            f"cached {what} {path} has SHA-256 {actual[:16]}..., its record {record_path.name} says "
            f"{str(record.get('sha256'))[:16]}...: the file was changed or damaged; delete {path} and "
            f"{record_path.name} (the next run exports it again), or use {fix}")
    return path, record


def verify(module: nn.Module, tower: OnnxTower, size: int) -> dict:
    """The exported graph (``tower``) against ``module`` in torch on the probe batch."""
    pixels = probe_pixels(size)
    with torch.inference_mode():
        theirs = module(pixels).numpy()
    return {**agreement(tower(pixels.numpy()), theirs), "probes": int(pixels.shape[0])}


def for_backend(backend: str, device, load) -> OnnxTower | None:
    """The ONNX Runtime graph ``backend`` asks for on ``device``, or None for torch. ``load()``
    exports or reads it (None: ``auto`` measured torch the faster); under ``auto`` an export that
    fails its check falls back to torch with a warning, a damaged cache never does."""
    if choose(backend, device) != "onnx":
        return None
    try:
        return load()
    except BackendError as e:
        if backend != "auto" or isinstance(e, DamagedCacheError):
            raise
        log.warning("%s; falling back to torch", e)
        return None


def attach(encoder, backend: str) -> None:
    """Give ``encoder`` (an ImageEncoder) the backend ``backend`` asks for: sets ``encoder.backend``
    and, for onnx, ``encoder.tower``. Under ``auto`` the faster at export is kept (see
    :func:`time_backends`), and an export that fails its check falls back to torch with a warning."""
    encoder.backend, encoder.tower = "torch", None
    encoder.tower = for_backend(backend, encoder.device, lambda: load_tower(
        encoder.clip, encoder.head, encoder.name, encoder.preprocess.size, backend=backend))
    if encoder.tower is not None:
        encoder.backend = "onnx"
