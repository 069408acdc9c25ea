"""Land/sea lookup from the GLOBE 1 km mask shipped in the ``global-land-mask`` package.

The package keeps the mask as a (21600, 43200) bool array (930 MB in memory). geoindex streams it
out of the ``.npz`` a band of rows at a time and packs it to bits (117 MB), so the full array is
never in memory. Indexing follows the package
(rows run north to south from 90 deg, columns east from -180 deg, clipped at the edges), so
:func:`is_land` agrees with ``global_land_mask.globe.is_land`` point for point. Most lakes count as
land, as in the package.
"""

from __future__ import annotations

import functools
import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoindex.errors import MissingDependencyError

_MASK_FILE = "globe_combined_mask_compressed.npz"


@dataclass(frozen=True)
class PackedLandMask:
    bits: np.ndarray  # (n_lat, ceil(n_lng / 8)) uint8, 1 = land
    lat0: float
    dlat: float
    n_lat: int
    lng0: float
    dlng: float
    n_lng: int

    def is_land(self, lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
        """Vectorised: lat, lng degrees (any shape) -> bool array, True on land."""
        lat = np.asarray(lat, dtype=np.float64)
        lng = np.asarray(lng, dtype=np.float64)
        lat_max, lat_min = self.lat0, self.lat0 + self.dlat * (self.n_lat - 1)
        lng_min, lng_max = self.lng0, self.lng0 + self.dlng * (self.n_lng - 1)
        i = ((np.clip(lat, lat_min, lat_max) - self.lat0) / self.dlat).astype(np.int64)
        j = ((np.clip(lng, lng_min, lng_max) - self.lng0) / self.dlng).astype(np.int64)
        byte = self.bits[i, j >> 3]
        return ((byte >> (7 - (j & 7))) & 1).astype(bool)


def _mask_path() -> Path:
    spec = importlib.util.find_spec("global_land_mask")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "land mask needs the `global-land-mask` package: run `pip install global-land-mask`"
        )
    return Path(list(spec.submodule_search_locations)[0]) / _MASK_FILE


def _packed_land_bits(npz: zipfile.ZipFile, rows_per_band: int = 512) -> np.ndarray:
    """Read ``mask.npy`` (bool, True = ocean) in bands and pack ``~mask`` to bits."""
    with npz.open("mask.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(version, np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if fortran or dtype != np.bool_ or len(shape) != 2:
            raise MissingDependencyError(
                "global-land-mask's mask has an unexpected layout: run `pip install global-land-mask==1.0.0`"
            )
        n_lat, n_lng = shape
        bits = np.empty((n_lat, (n_lng + 7) // 8), dtype=np.uint8)
        for start in range(0, n_lat, rows_per_band):
            rows = min(rows_per_band, n_lat - start)
            band = np.frombuffer(f.read(rows * n_lng), dtype=np.bool_).reshape(rows, n_lng)
            bits[start : start + rows] = np.packbits(~band, axis=1)
    return bits


@functools.cache
def land_mask() -> PackedLandMask:
    """The packed land mask (loaded once per process, ~117 MB)."""
    path = _mask_path()
    with np.load(path) as f:
        lat, lng = f["lat"], f["lon"]
    with zipfile.ZipFile(path) as npz:
        bits = _packed_land_bits(npz)
    return PackedLandMask(
        bits=bits,
        lat0=float(lat[0]),
        dlat=float(lat[1] - lat[0]),
        n_lat=len(lat),
        lng0=float(lng[0]),
        dlng=float(lng[1] - lng[0]),
        n_lng=len(lng),
    )


def is_land(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    """lat, lng degrees -> bool array, True where the GLOBE mask says land."""
    return land_mask().is_land(lat, lng)
