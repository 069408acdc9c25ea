"""The reference directory contract: ``REF/manifest.json``, ``REF/vectors.faiss``, ``REF/photos.duckdb``,
``REF/skipped.csv`` and, for compressed indexes, the exact store ``REF/exact.npy`` (and, with
``--lists-on-disk``, the inverted lists ``REF/lists.ivfdata``).

The manifest (format ``geoindex-photos/1``) records the encoder the photos went through (CLIP
model, checkpoint, GeoCLIP weights: a query must use the same), the factory and search strings,
counts, timings, versions, and the size and SHA-256 of every other file, as a cell index's does
(:mod:`geoindex.store.manifest`). :func:`open_reference_dir` refuses a directory that is missing,
incomplete, altered or not a reference gallery, with the command that makes one.
"""

from __future__ import annotations

import json
from pathlib import Path

from geoindex.encoders.weights import sha256_file
from geoindex.errors import IndexDirError

FORMAT = "geoindex-photos/1"
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
PHOTOS_DB = "photos.duckdb"
SKIPPED = "skipped.csv"
REQUIRED = (VECTORS, PHOTOS_DB)


def make_hint(path: Path) -> str:
    return f"build one with `geoindex build --photos photos.csv --out {path}`"


def open_reference_dir(path: str | Path, verify: str = "size") -> dict:
    """The verified manifest of reference directory ``path``. ``verify``: ``size`` (fast), ``full``
    (sizes and SHA-256 of every file) or ``none``."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        what = "does not exist" if not path.exists() else f"has no {MANIFEST} (not a finished reference gallery)"
        raise IndexDirError(f"reference photos dir {str(path)!r} {what}: {make_hint(path)}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise IndexDirError(f"{manifest_path} is not readable JSON ({e}): {make_hint(path)} --overwrite") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        hint = " (that is a cell index: pass it as --index)" if str(got).startswith("geoindex-index") else ""
        raise IndexDirError(f"{manifest_path} has format {got!r}, not {FORMAT!r}{hint}: {make_hint(path)}")
    files = manifest.get("files", {})
    for name in dict.fromkeys([*REQUIRED, *files]):
        entry, target = files.get(name), path / name
        if entry is None or not target.is_file():
            raise IndexDirError(f"reference photos dir {str(path)!r} lacks {name}: {make_hint(path)} --overwrite")
        if verify in ("size", "full") and target.stat().st_size != entry["bytes"]:
            raise IndexDirError(f"{target} is {target.stat().st_size} bytes, the manifest says {entry['bytes']}: "
                                f"the file was changed or truncated; {make_hint(path)} --overwrite")
        if verify == "full" and sha256_file(target) != entry["sha256"]:
            raise IndexDirError(f"{target} fails its SHA-256 check: {make_hint(path)} --overwrite")
    return manifest
