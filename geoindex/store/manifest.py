"""The index directory contract: ``DIR/manifest.json``, ``DIR/vectors.faiss``, ``DIR/cells.duckdb``,
and, when built, the exact store ``DIR/exact.npy`` (:mod:`geoindex.store.exact_store`).

The manifest records what was built and how (gallery, encoder weights checksum, factory and
search strings, counts, timings, versions) and the size and SHA-256 of every other file.
:func:`open_index_dir` refuses a directory that is missing, incomplete, altered, or built from
other weights, with a message that says what to do.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoindex.atomic import write_json
from geoindex.hashing import sha256_file
from geoindex.errors import IndexDirError, InvalidArgumentError
from geoindex.index.search import SearchSettings

FORMAT = "geoindex-index/1"
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
CELLS = "cells.duckdb"
LISTS = "lists.ivfdata"  # the inverted lists, when built with --lists-on-disk (memory-mapped, never read whole)
REQUIRED_FILES = (VECTORS, CELLS)
# files up to this size are checksummed whenever an index is opened for queries (SHA-256 at ~1 GB/s:
# a tenth of a second at most); larger ones (res >= 6 vectors, on-disk lists) by `geoindex inspect`
# and, in the background after it starts, by the server
SMALL_FILE_BYTES = 100 * 2**20


@dataclass(frozen=True)
class IndexDir:
    """A verified index directory. ``manifest`` is the parsed manifest.json; ``search`` the
    index's default search settings, parsed from it once."""

    path: Path
    manifest: dict[str, Any]
    search: SearchSettings

    @property
    def vectors_path(self) -> Path:
        return self.path / VECTORS

    @property
    def cells_path(self) -> Path:
        return self.path / CELLS

    @property
    def factory(self) -> str:
        return self.manifest["index"]["factory"]

    @property
    def ntotal(self) -> int:
        return int(self.manifest["index"]["ntotal"])

    @property
    def resolution(self) -> int | None:
        """The gallery's H3 resolution; None for CSV galleries."""
        return self.manifest["gallery"].get("resolution")

    @property
    def store(self) -> dict | None:
        """The exact store's manifest entry (``{"kind": "fp16", ...}``), None when not built."""
        return self.manifest.get("store")

    @property
    def hint(self) -> str:
        """The command that rebuilds this index, from its own manifest."""
        return rebuild_hint(self.path, self.manifest)

    @property
    def logit_scale(self) -> float:
        """GeoCLIP's learnt logit scale (log space: the softmax multiplies cosines by its exp)."""
        return float(self.manifest["encoder"]["logit_scale"])


def versions() -> dict[str, str]:
    """Versions of everything that shapes an index, for the manifest."""
    import duckdb
    import faiss
    import h3
    import numpy
    import torch

    from geoindex.constants import __version__

    return {
        "geoindex": __version__,
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "torch": torch.__version__,
        "h3": h3.__version__,
        "duckdb": duckdb.__version__,
        "numpy": numpy.__version__,
    }


def file_entries(folder: Path, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {
        name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
        for name in names
    }


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write manifest.json durably (temp file, fsync, rename)."""
    write_json(folder / MANIFEST, manifest, indent=2, durable=True)


def rebuild_hint(path: Path, manifest: dict | None = None) -> str:
    """The command that rebuilds this index: its own gallery, factory, search and store when the
    manifest says them; a generic command (the gallery left to the reader) when it cannot be read."""
    try:
        g, idx = manifest["gallery"], manifest["index"]
        what = f"--resolution {g['resolution']} --cells {g['cells']}" if g["kind"] == "h3" else \
            f"--gallery-csv {g['path']}"
        region = g.get("region") or {}  # a regional build keeps its region
        what += "".join(f" --country {c}" for c in region.get("countries", ()))
        what += "".join(f" --bbox={','.join(f'{v:g}' for v in b)}" for b in region.get("bboxes", ()))
        what += "".join(f" --cells {c}" for c in region.get("cells", ()))
        what += f" --factory {idx['factory']} --search '{idx['search']}'"
        if manifest.get("store"):
            what += f" --store {manifest['store']['kind']}"
    except (KeyError, TypeError):
        return (f"rebuild it with `geoindex build --resolution R --out {path} --overwrite` (R and the other "
                "options as when it was built: its manifest cannot tell them)")
    return f"rebuild it with `geoindex build {what} --out {path} --overwrite`"


def unreadable(e: OSError | ValueError) -> str:
    """Why a file could not be read, and what to do, as a clause: "cannot be read (...)"."""
    if isinstance(e, PermissionError):
        return "cannot be read (permission denied): give this user read access (chmod a+r) or run as its owner"
    if isinstance(e, OSError):
        return f"cannot be read ({e.strerror or e}): check the disk and the file"
    return f"is not readable JSON ({e})"


def verify_checksum(path: Path, name: str, entry: dict, manifest: dict, hint: str | None = None) -> None:
    """Refuse ``path/name`` when its SHA-256 is not the manifest's ``entry["sha256"]``; ``hint``: the
    rebuild command (default: a cell index's, from ``manifest``)."""
    target = path / name
    try:
        digest = sha256_file(target)
    except OSError as e:
        raise IndexDirError(f"{target} {unreadable(e)}") from e
    if digest != entry.get("sha256"):
        raise IndexDirError(f"{target} fails its SHA-256 check (same size, other bytes: corrupted on disk or "
                            f"edited): {hint or rebuild_hint(path, manifest)}")


def check_files(path: Path, manifest: dict, required: tuple[str, ...], verify: str, small_file_bytes: int,
                hint: str, what: str = "index dir") -> None:
    """The per-file checks of a directory whose manifest lists its files (a cell index, a photo
    gallery): every required and listed file present, its size the manifest's, and its SHA-256
    for ``verify="full"``, or ``"small"`` and at most ``small_file_bytes``. ``hint``: the rebuild
    command; ``what``: the kind of directory, as messages name it."""
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise IndexDirError(f"{path / MANIFEST} holds no file list: {hint}")
    for name in dict.fromkeys([*required, *files]):
        entry = files.get(name)
        target = path / name
        if not isinstance(entry, dict) or not target.is_file():
            raise IndexDirError(f"{what} {str(path)!r} lacks {name}: {hint}")
        if verify in ("size", "small", "full") and target.stat().st_size != entry.get("bytes"):
            raise IndexDirError(
                f"{target} is {target.stat().st_size} bytes, the manifest says {entry.get('bytes')}: "
                f"the file was changed or truncated; {hint}"
            )
        if verify == "full" or (verify == "small" and entry["bytes"] <= small_file_bytes):
            verify_checksum(path, name, entry, manifest, hint)


def open_index_dir(path: str | Path, verify: str = "size", weights_sha256: str | None = None,
                   small_file_bytes: int = SMALL_FILE_BYTES) -> IndexDir:
    """Open and verify an index directory.

    Args:
        path: the index directory (``manifest.json`` and the files it lists).
        verify: ``"size"`` (file sizes, fast), ``"small"`` (sizes, and SHA-256 of the files up
            to ``small_file_bytes``), ``"full"`` (sizes and SHA-256 of every file) or ``"none"``.
        weights_sha256: when given, the SHA-256 of the location-encoder weights the caller will
            encode queries with; a mismatch means the index holds another model's vectors.
        small_file_bytes: the size up to which ``"small"`` checksums a file.

    Returns:
        An :class:`IndexDir`: the parsed manifest with typed accessors (paths, search settings,
        resolution, store).

    Raises:
        IndexDirError: missing, not a finished index, a file missing, truncated or altered, or
            built with other weights; the message gives the command that rebuilds it.
    """
    path = Path(path)
    if not path.is_dir():
        raise IndexDirError(
            f"index dir {str(path)!r} does not exist: build one with "
            f"`geoindex build --resolution 5 --out {path}`"
        )
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise IndexDirError(
            f"index dir {str(path)!r} has no {MANIFEST}: it is not a finished geoindex index; "
            f"run `geoindex build --resolution 5 --out {path}` first"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise IndexDirError(f"{manifest_path} {unreadable(e)}: {rebuild_hint(path)}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexDirError(
            f"{manifest_path} has format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
            f"not {FORMAT!r}: {rebuild_hint(path, manifest if isinstance(manifest, dict) else None)}"
        )
    # the exact store too, when built
    check_files(path, manifest, REQUIRED_FILES, verify, small_file_bytes, rebuild_hint(path, manifest))
    if weights_sha256 is not None:
        built_with = manifest.get("encoder", {}).get("weights_sha256")
        if built_with != weights_sha256:
            raise IndexDirError(
                f"index dir {str(path)!r} was built with location-encoder weights {str(built_with)[:12]}..., "
                f"but the weights in use are {weights_sha256[:12]}...: its vectors belong to another "
                f"model; pass the weights it was built with (--weights DIR; its manifest names them: "
                f"{manifest.get('encoder', {}).get('weights_source')!s}), or {rebuild_hint(path, manifest)} "
                f"(adding --weights DIR when these are trained weights)"
            )
    try:
        search = SearchSettings.parse(manifest.get("index", {}).get("search"))
    except InvalidArgumentError as e:
        raise IndexDirError(f"{manifest_path} holds a bad search string ({e}): {rebuild_hint(path)}") from e
    return IndexDir(path, manifest, search)
