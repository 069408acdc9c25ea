"""GeoCLIP's location encoder, reimplemented to run fast, loading the pretrained weights as data.

lat, lng (degrees) -> Equal Earth projection -> three random-Fourier-feature branches
(sigma 2^0, 2^4, 2^8; 256 frequencies each, cos and sin -> 512) -> per branch an MLP
512 -> 1024 -> 1024 -> 1024 -> 512 with ReLU -> the three branch outputs summed -> (n, 512).

Numerics follow the reference exactly where it matters: the projection and the Fourier phases
are computed with the same float32 operations in the same order, because the sigma-2^8 branch
multiplies coordinates by frequencies up to ~1000 and a one-ulp change in the projection moves a
phase by ~1e-3 rad. The MLPs are where the time goes: each layer is one ``addmm`` on weights stored
input-major, ReLU in place, and the three heads accumulate into one output buffer (``addmm_``),
which measured ~12% faster than the reference's ``nn.Linear`` chain and ``zeros`` + ``+=`` on 2 cores
(``benchmarks/bench_build.py``); a batched ``baddbmm`` over branches measured ~25% slower.

A pass of a few points (refinement's: 1-7 a start) costs reading the weights, not multiplying
them, and after a ReLU most units are zero at every point of such a pass (sigma 2^0: ~90% of the
first layer's, sigma 2^4: ~45%, on photo locations), so there a layer reads only the weight rows of
the units active at some point (:func:`_active`): the same sum less its zero terms, equal to the
dense product within float32 rounding (~5e-8). Measured on 2 busy cores (issue 36, one torch
thread): a sigma-2^0 branch at 1-7 points 2.3-2.5x faster, sigma 2^4 1.1-1.3x; the fine branch,
~80-98% active over 6-7 points, stays dense (:data:`SPARSE_SHARE`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geoindex.constants import EMBED_DIM
from geoindex.encoders.weights import geoclip_files
from geoindex.errors import InvalidArgumentError, InvalidCoordinateError
from geoindex.hashing import sha256_file

log = logging.getLogger(__name__)

SIGMAS = (2.0**0, 2.0**4, 2.0**8)

# Equal Earth projection constants (Savric, Patterson & Jenny 2018), as GeoCLIP uses them.
_A1, _A2, _A3, _A4 = 1.340264, -0.081106, 0.000893, 0.003796
_SCALE = 66.50336


SPARSE_POINTS = 32  # passes of at most this many points (on the CPU) read only active units' weight rows
SPARSE_SHARE = 0.6  # ... when at most this share of a layer's input units is active (else the gather costs more)


def _active(h: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, w)`` for ``h @ w``, or, for a small CPU pass whose ReLU output ``h`` (n, k) has at most
    SPARSE_SHARE of its k units above zero at any point, only those columns of ``h`` and rows of
    ``w`` (k, out): the same product without the terms that are exactly zero."""
    if h.shape[0] > SPARSE_POINTS or h.device.type != "cpu" or h.dtype != torch.float32:  # not under autocast
        return h, w
    units = np.flatnonzero(h.detach().numpy().any(0))  # ReLU output: nonzero is active (numpy: ~4x less overhead)
    if len(units) > SPARSE_SHARE * h.shape[1]:
        return h, w
    units = torch.from_numpy(units)
    return h.index_select(1, units), w.index_select(0, units)


def equal_earth(latlng: torch.Tensor) -> torch.Tensor:
    """(n, 2) float32 lat, lng degrees -> (n, 2) float32 Equal Earth x, y scaled as GeoCLIP."""
    lat_rad = torch.deg2rad(latlng[:, 0])
    lng_rad = torch.deg2rad(latlng[:, 1])
    sqrt3 = torch.sqrt(torch.tensor(3.0))
    theta = torch.asin((sqrt3 / 2) * torch.sin(lat_rad))
    denominator = 3 * (9 * _A4 * theta**8 + 7 * _A3 * theta**6 + 3 * _A2 * theta**2 + _A1)
    x = (2 * sqrt3 * lng_rad * torch.cos(theta)) / denominator
    y = _A4 * theta**9 + _A3 * theta**7 + _A2 * theta**3 + _A1 * theta
    return (torch.stack((x, y), dim=1) * _SCALE) / 180


class LocationEncoder(nn.Module):
    """GeoCLIP location encoder with branch-stacked weights.

    Parameters (3 = branches): ``b`` (3, 256, 2) Fourier frequencies; ``w1`` (3, 512, 1024),
    ``w2``, ``w3`` (3, 1024, 1024), ``wh`` (3, 1024, 512) stored input-major for ``addmm``,
    with biases ``b1``.. ``bh`` shaped (3, 1, out).
    """

    def __init__(self) -> None:
        super().__init__()
        n = len(SIGMAS)
        self.register_buffer("b", torch.zeros(n, 256, 2))
        self.w1 = nn.Parameter(torch.zeros(n, 512, 1024))
        self.b1 = nn.Parameter(torch.zeros(n, 1, 1024))
        self.w2 = nn.Parameter(torch.zeros(n, 1024, 1024))
        self.b2 = nn.Parameter(torch.zeros(n, 1, 1024))
        self.w3 = nn.Parameter(torch.zeros(n, 1024, 1024))
        self.b3 = nn.Parameter(torch.zeros(n, 1, 1024))
        self.wh = nn.Parameter(torch.zeros(n, 1024, EMBED_DIM))
        self.bh = nn.Parameter(torch.zeros(n, 1, EMBED_DIM))

    @classmethod
    def from_geoclip_state_dict(cls, state: dict[str, torch.Tensor]) -> LocationEncoder:
        """Build from the reference state dict (keys ``LocEnc{i}.capsule.{0,1,3,5}``, ``head.0``)."""
        model = cls()
        branches = range(len(SIGMAS))

        def stack(suffix: str, transpose: bool = False) -> torch.Tensor:
            try:
                parts = [state[f"LocEnc{i}.{suffix}"] for i in branches]
            except KeyError as e:
                raise InvalidArgumentError(
                    f"not a GeoCLIP location-encoder state dict: key {e} missing; "
                    "point GEOINDEX_GEOCLIP_WEIGHTS at the geoclip package's weights folder"
                ) from e
            parts = [p.t() if transpose else p.unsqueeze(0) if p.dim() == 1 else p for p in parts]
            return torch.stack(parts).contiguous().float()

        with torch.no_grad():
            model.b.copy_(stack("capsule.0.b"))
            model.w1.copy_(stack("capsule.1.weight", transpose=True))
            model.b1.copy_(stack("capsule.1.bias"))
            model.w2.copy_(stack("capsule.3.weight", transpose=True))
            model.b2.copy_(stack("capsule.3.bias"))
            model.w3.copy_(stack("capsule.5.weight", transpose=True))
            model.b3.copy_(stack("capsule.5.bias"))
            model.wh.copy_(stack("head.0.weight", transpose=True))
            model.bh.copy_(stack("head.0.bias"))
        return model.eval().requires_grad_(False)

    def to_geoclip_state_dict(self) -> dict[str, torch.Tensor]:
        """The reference layout, float32 on the CPU (the inverse of :meth:`from_geoclip_state_dict`):
        what ``geoindex-train`` saves, so trained weights load wherever GeoCLIP's released ones do."""
        layers = (("capsule.1", "w1", "b1"), ("capsule.3", "w2", "b2"), ("capsule.5", "w3", "b3"), ("head.0", "wh", "bh"))
        out = {}
        with torch.no_grad():
            for i in range(len(SIGMAS)):
                out[f"LocEnc{i}.capsule.0.b"] = self.b[i].float().cpu().clone()
                for key, w, b in layers:
                    out[f"LocEnc{i}.{key}.weight"] = getattr(self, w)[i].t().float().cpu().contiguous()
                    out[f"LocEnc{i}.{key}.bias"] = getattr(self, b)[i, 0].float().cpu().clone()
        return out

    def fourier_features(self, latlng: torch.Tensor) -> torch.Tensor:
        """(n, 2) lat, lng degrees -> (3, n, 512) float32 [cos, sin] per branch."""
        v = 2 * np.pi * equal_earth(latlng)
        feats = []
        for i in range(self.b.shape[0]):
            vp = v @ self.b[i].T
            feats.append(torch.cat((torch.cos(vp), torch.sin(vp)), dim=-1))
        return torch.stack(feats)

    def forward(self, latlng: torch.Tensor) -> torch.Tensor:
        """(n, 2) float32 lat, lng degrees -> (n, 512) raw (not normalised) features."""
        return self.from_features(self.fourier_features(latlng))

    def from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """(3, n, 512) Fourier features -> (n, 512) raw features: the MLPs alone (training keeps
        the phases out of fp16 autocast and runs these in it)."""
        feats = feats.to(self.w1.dtype)
        if torch.is_autocast_enabled(feats.device.type):
            # autocast casts addmm's inputs but skips in-place ops: an fp16 out.addmm_(h, fp32 weights)
            # would fail on the dtypes, so under autocast (training on CUDA) the branches are summed out of place
            return sum(torch.addmm(self.bh[i], self._trunk(feats[i], i), self.wh[i])
                       for i in range(feats.shape[0])).float()
        out = torch.addmm(self.bh[0], *_active(self._trunk(feats[0], 0), self.wh[0]))
        for i in range(1, feats.shape[0]):
            out.addmm_(*_active(self._trunk(feats[i], i), self.wh[i])).add_(self.bh[i])
        return out.float()

    def branches(self, latlng: torch.Tensor, which: tuple[int, ...], partial: int = 0):
        """The sum of branches ``which`` alone: (n, 2) lat, lng -> (n, 512), their heads' biases
        included; all three, in order, are :meth:`forward` (the same operations). Refinement holds
        the slow ones (sigma 2^0, 2^4) fixed over a few km and evaluates only the fine one
        (:mod:`geoindex.locate.refine`). With ``partial`` k > 0 also the sum of the first k of
        ``which``, copied on the way: ``(sum of which, sum of which[:k])``."""
        v = 2 * np.pi * equal_earth(latlng)
        out = part = None
        for j, i in enumerate(which):
            if j == partial and partial:
                part = out.clone()
            vp = v @ self.b[i].T
            feats = torch.cat((torch.cos(vp), torch.sin(vp)), dim=-1).to(self.w1.dtype)
            h, w = _active(self._trunk(feats, i), self.wh[i])
            out = torch.addmm(self.bh[i], h, w) if out is None else out.addmm_(h, w).add_(self.bh[i])
        return (out.float(), part.float()) if partial else out.float()

    def _trunk(self, feats: torch.Tensor, i: int) -> torch.Tensor:
        """Branch ``i``'s three hidden layers on its (n, 512) features -> (n, 1024)."""
        h = torch.addmm(self.b1[i], feats, self.w1[i]).relu_()
        h = torch.addmm(self.b2[i], *_active(h, self.w2[i])).relu_()
        return torch.addmm(self.b3[i], *_active(h, self.w3[i])).relu_()


def load_location_encoder(device: str | torch.device = "cpu", precision: str = "fp32",
                          weights: str | Path | None = None, state: dict | None = None) -> LocationEncoder:
    """The pretrained GeoCLIP location encoder on ``device``.

    Args:
        device: a torch device (``"cpu"``, ``"cuda"``, ``"cuda:N"``).
        precision: ``fp32`` (default, exact), or ``fp16``/``bf16`` for the MLPs on CUDA only
            (the Fourier phases always stay float32; CPUs have no fast half-precision units).
        weights: a GeoCLIP weights folder (:func:`geoclip_files`; ``--weights``); default the
            released weights from the ``geoclip`` package (or ``$GEOINDEX_GEOCLIP_WEIGHTS``).
        state: the reference-format state dict itself, instead of reading ``weights`` (Ray
            actors get it from the driver, so no node needs the folder).

    Returns:
        A :class:`LocationEncoder` (an ``nn.Module``): (n, 2) float32 lat, lng degrees in,
        (n, 512) unnormalised vectors out; :func:`encode_latlng` batches and normalises.

    Raises:
        InvalidArgumentError: an unknown precision, or half precision off CUDA.
        WeightsNotFoundError: the weights folder or file is missing.
    """
    device = torch.device(device)
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in dtypes:
        raise InvalidArgumentError(
            f"precision {precision!r} is not one of {sorted(dtypes)}: use fp32 (exact)"
        )
    if precision != "fp32" and device.type != "cuda":
        raise InvalidArgumentError(
            f"precision {precision!r} needs a CUDA device (on CPU it is slower and less exact): "
            "use --precision fp32"
        )
    if state is None:
        state = location_state_dict(weights)
    model = LocationEncoder.from_geoclip_state_dict(state)
    mlp_dtype = dtypes[precision]
    for name in ("w1", "b1", "w2", "b2", "w3", "b3", "wh", "bh"):
        getattr(model, name).data = getattr(model, name).data.to(mlp_dtype)
    return model.to(device)


def location_state_dict(weights: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The reference-format state dict in the weight folder in use (see :func:`geoclip_files`)."""
    return torch.load(geoclip_files(weights).location_encoder, map_location="cpu", weights_only=True)


def location_weights_sha256(weights: str | Path | None = None) -> str:
    """SHA-256 of the location-encoder weight file in use (recorded in every manifest)."""
    return sha256_file(geoclip_files(weights).location_encoder)


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU (logged). ``cpu``/``cuda`` are taken as given."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.warning("no CUDA device: encoding on the CPU with %d threads", torch.get_num_threads())
        return torch.device("cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgumentError(
            f"device {requested!r} asked for but torch sees no CUDA device: use --device cpu"
        )
    return torch.device(requested)


def validate_latlng(latlng: np.ndarray) -> np.ndarray:
    """Check an (n, 2) array of lat, lng degrees; return it as float64. Raises InvalidCoordinateError."""
    arr = np.asarray(latlng, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InvalidCoordinateError(f"coordinates must have shape (n, 2) as lat, lng; got {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1) | (np.abs(arr[:, 0]) > 90) | (np.abs(arr[:, 1]) > 180)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidCoordinateError(
            f"row {i}: lat, lng = {arr[i, 0]}, {arr[i, 1]} is not inside [-90, 90] x [-180, 180] "
            f"({int(bad.sum())} bad rows in all); fix or drop those rows"
        )
    return arr


# Query-time encoder work (refinement: a few hundred points) runs on one torch thread: a pass that
# small is shorter than waking a second thread, and on a busy machine waiting for that thread's core
# dominates (issue 36: refine=1 took 81 ms at 2 threads, 15 ms at 1). torch.set_num_threads is per
# calling thread here (OpenMP), so threads already running (a server's image encoder) keep their
# setting; torch also records it as the default a thread takes at its first parallel operation, so
# a thread born during the block would keep 1 thread (restored at the block's end: a short window).
SMALL_WORK_POINTS = 4096  # at most this many points per pass: one thread
SMALL_WORK_THREADS = 1  # benchmarks/bench_search_path.py sets 0 to measure torch's default


@contextmanager
def small_work_threads(points: int) -> Iterator[None]:
    """Run the block on ``SMALL_WORK_THREADS`` torch threads (in this thread) when ``points`` is at
    most ``SMALL_WORK_POINTS``; leave the setting alone otherwise (or when it is 0)."""
    saved = torch.get_num_threads()
    if not SMALL_WORK_THREADS or points > SMALL_WORK_POINTS or saved <= SMALL_WORK_THREADS:
        yield
        return
    torch.set_num_threads(SMALL_WORK_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def encode_latlng(
    model: LocationEncoder,
    latlng: np.ndarray,
    batch_size: int = 8192,
    normalize: bool = True,
) -> np.ndarray:
    """Encode coordinates into GeoCLIP's embedding space.

    Runs in ``torch.inference_mode`` in batches of ``batch_size`` on the model's device.

    Args:
        model: from :func:`load_location_encoder`.
        latlng: (n, 2) lat, lng in degrees (any float dtype), lat in [-90, 90], lng in
            [-180, 180].
        batch_size: points per forward pass.
        normalize: L2-normalise each vector (the index and the queries use unit vectors).

    Returns:
        (n, 512) float32 array, in input order.

    Raises:
        InvalidCoordinateError: a row that is not finite or out of range (the first is named).
        InvalidArgumentError: ``batch_size`` <= 0.
    """
    if batch_size <= 0:
        raise InvalidArgumentError(f"batch_size must be positive, got {batch_size}")
    arr = validate_latlng(latlng).astype(np.float32)
    device = model.b.device
    out = np.empty((len(arr), EMBED_DIM), dtype=np.float32)
    with torch.inference_mode():
        for s in _batches(len(arr), batch_size):
            x = torch.from_numpy(arr[s]).to(device, non_blocking=True)
            y = model(x)
            if normalize:
                y = torch.nn.functional.normalize(y, dim=1)
            out[s] = y.cpu().numpy()
    return out


