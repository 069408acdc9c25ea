"""The reference directory contract: ``REF/manifest.json``, ``REF/vectors.faiss``, ``REF/photos.duckdb``,
``REF/skipped.csv`` and, for compressed indexes, the exact store ``REF/exact.npy`` (and, with
``--lists-on-disk``, the inverted lists ``REF/lists.ivfdata``).

The manifest (format ``geoindex-photos/1``) records the encoder the photos went through (CLIP
model, checkpoint, GeoCLIP weights: a query must use the same), the factory and search strings,
counts, timings, versions, and the size and SHA-256 of every other file, as a cell index's does
(:mod:`geoindex.store.manifest`). :func:`open_reference_dir` refuses a directory that is missing,
incomplete, altered or not a reference gallery, with the command that rebuilds it from its own
manifest (:func:`rebuild_hint`), by the cell index's checks (:func:`geoindex.store.manifest.check_files`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from geoindex.errors import IndexDirError
from geoindex.store.manifest import SMALL_FILE_BYTES, check_files, unreadable

FORMAT = "geoindex-photos/1"
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
PHOTOS_DB = "photos.duckdb"
SKIPPED = "skipped.csv"
REQUIRED = (VECTORS, PHOTOS_DB)


def make_hint(path: Path) -> str:
    return f"build one with `geoindex build --photos photos.csv --out {path}`"


def rebuild_hint(path: Path, manifest: dict | None = None) -> str:
    """The command that rebuilds this gallery (a photo build, never a cell build): its own CSV, CLIP
    model, factory, search and lists when the manifest says them; the generic command when it
    cannot be read."""
    try:
        idx, enc = manifest["index"], manifest["encoder"]
        what = f"--photos {manifest['csv']['path']} --clip-model {enc['clip_model']}"
        what += f" --factory {idx['factory']}" + (f" --search '{idx['search']}'" if idx.get("search") else "")
        if idx.get("lists") == "disk":
            what += " --lists-on-disk"
        if enc.get("features"):
            what += f" --photos-features {enc['features']}"
    except (KeyError, TypeError):
        return (f"rebuild it with `geoindex build --photos CSV --out {path} --overwrite` (CSV and the other options "
                "as when it was built: its manifest cannot tell them)")
    return f"rebuild it with `geoindex build {what} --out {path} --overwrite`"


@dataclass(frozen=True)
class ReferenceDir:
    """A verified reference directory: ``manifest`` is its parsed manifest.json."""

    path: Path
    manifest: dict

    @property
    def hint(self) -> str:
        return rebuild_hint(self.path, self.manifest)


def open_reference_dir(path: str | Path, verify: str = "size", small_file_bytes: int = SMALL_FILE_BYTES) -> ReferenceDir:
    """Open and verify reference directory ``path``, as :func:`geoindex.store.manifest.open_index_dir`
    does a cell index. ``verify``: ``size`` (fast), ``small`` (sizes, and SHA-256 of the files up to
    ``small_file_bytes``), ``full`` (sizes and SHA-256 of every file) or ``none``."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        what = "does not exist" if not path.exists() else f"has no {MANIFEST} (not a finished reference gallery)"
        raise IndexDirError(f"reference photos dir {str(path)!r} {what}: {make_hint(path)}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise IndexDirError(f"{manifest_path} {unreadable(e)}: {rebuild_hint(path)}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        hint = " (that is a cell index: pass it as --index)" if str(got).startswith("geoindex-index") else ""
        raise IndexDirError(f"{manifest_path} has format {got!r}, not {FORMAT!r}{hint}: {make_hint(path)}")
    check_files(path, manifest, REQUIRED, verify, small_file_bytes, rebuild_hint(path, manifest),
                what="reference photos dir")
    return ReferenceDir(path, manifest)
