"""Location embeddings as features: a file of lat, lng rows -> a file of GeoCLIP location vectors.

GeoCLIP's location encoder is useful beyond geolocation (the paper's "suitable to use even beyond
geo-localization"): :func:`embed_file` streams a CSV or Parquet of coordinates through it, in
batches, on CUDA when present, into ``.npy`` ((n, 512) float32) or ``.parquet`` (``lat``, ``lng``,
``embedding``: fixed-size lists of 512 float32). Rows are checked as a gallery's are, all of them
before the first is encoded; the output appears only when complete (written beside it as ``.OUT.tmp``, renamed; a killed
run's temporary is removed by the next run, and ``geoindex embed`` removes it on SIGTERM too).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoindex.atomic import atomic_path, open_memmap, remove_stale, temp_path, write_error
from geoindex.cells.coordinates import SUFFIXES, count_latlng, iter_latlng
from geoindex.encoders.location import EMBED_DIM, encode_latlng, load_location_encoder, pick_device
from geoindex.errors import InvalidArgumentError

OUT_SUFFIXES = (".npy", ".parquet")


@dataclass(frozen=True)
class EmbedReport:
    points: int
    seconds: float
    device: str
    out: Path

    @property
    def points_per_s(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else float("inf")


def check_paths(src: str | Path, out: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Refuse what cannot work before any reading: suffixes, an existing output, a missing folder."""
    src, out = Path(src), Path(out)
    if src.suffix.lower() not in SUFFIXES:
        raise InvalidArgumentError(f"input {str(src)!r} is not .csv or .parquet: give lat,lng rows in one of those")
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise InvalidArgumentError(f"output {str(out)!r} does not end in .npy or .parquet: the suffix picks the format")
    if out.exists() and not overwrite:
        raise InvalidArgumentError(f"output {str(out)!r} exists: pass --overwrite to replace it, or pick another path")
    if not out.parent.is_dir():
        raise InvalidArgumentError(f"output folder {str(out.parent)!r} does not exist: create it first")
    _check_writable(out)
    return src, out


def _check_writable(out: Path) -> None:
    """Create and remove the output's temporary now: an unwritable folder fails before any work.
    This also removes what a killed run left (:func:`geoindex.atomic.remove_stale`)."""
    remove_stale(out)
    out.with_name(f".{out.name}.partial").unlink(missing_ok=True)  # an older version's temporary
    probe = temp_path(out)
    try:
        probe.touch()
    except OSError as e:
        raise write_error(out, e) or InvalidArgumentError(
            f"cannot write {str(out)!r} ({e.strerror or e}): give an -o path in a folder you can write") from None
    probe.unlink()


def embed_file(src: str | Path, out: str | Path, *, device: str = "auto", batch_size: int = 8192,
               overwrite: bool = False, progress: bool = True, model=None, weights=None) -> EmbedReport:
    """Encode every row of ``src`` into ``out`` (format by suffix); see the module docstring."""
    from tqdm import tqdm

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise InvalidArgumentError(f"batch size {batch_size!r} must be a positive integer (default 8192)")
    src, out = check_paths(src, out, overwrite)
    n = count_latlng(src)  # every row checked before any encoding
    dev = pick_device(device) if model is None else model.b.device
    model = model if model is not None else load_location_encoder(dev, weights=weights)
    start = time.perf_counter()
    with atomic_path(out) as partial:
        writer = _NpyWriter(partial, n) if out.suffix.lower() == ".npy" else _ParquetWriter(partial)
        try:
            with tqdm(total=n, unit="pt", disable=not progress, desc="embed") as bar:
                for chunk in iter_latlng(src, chunk_rows=batch_size):
                    writer.write(chunk, encode_latlng(model, chunk, batch_size=batch_size))
                    bar.update(len(chunk))
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return EmbedReport(n, time.perf_counter() - start, str(dev), out)


class _NpyWriter:
    def __init__(self, path: Path, n: int):
        self.array = open_memmap(path, np.float32, (n, EMBED_DIM))  # allocated whole: a full disk is no SIGBUS
        self.at = 0

    def write(self, latlng: np.ndarray, xb: np.ndarray) -> None:
        self.array[self.at : self.at + len(xb)] = xb
        self.at += len(xb)

    def close(self) -> None:
        self.array.flush()
        del self.array

    def abort(self) -> None:
        self.array = None


class _ParquetWriter:
    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema([("lat", pa.float64()), ("lng", pa.float64()),
                                 ("embedding", pa.list_(pa.float32(), EMBED_DIM))])
        self.writer = pq.ParquetWriter(path, self.schema)

    def write(self, latlng: np.ndarray, xb: np.ndarray) -> None:
        pa = self.pa
        flat = pa.array(np.ascontiguousarray(xb).reshape(-1), type=pa.float32())
        vectors = pa.FixedSizeListArray.from_arrays(flat, EMBED_DIM)
        table = pa.Table.from_arrays([pa.array(latlng[:, 0]), pa.array(latlng[:, 1]), vectors], schema=self.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.close()


def read_embeddings(path: str | Path) -> np.ndarray:
    """(n, 512) float32 from a file :func:`embed_file` wrote (either format)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return np.load(path)
    import pyarrow.parquet as pq

    column = pq.read_table(path, columns=["embedding"]).column("embedding").combine_chunks()
    return column.flatten().to_numpy().reshape(-1, EMBED_DIM)
