"""Which files are photos: folders walked recursively, lists of paths, files named directly.

Image suffixes match case-insensitively; hidden files and folders (a name starting with ".") are
skipped; a folder reached twice through symbolic links is walked once, so a link loop ends. Paths
come back absolute (not resolved: a photo reached through a link keeps the link's path) and in a
stable order (sorted within each folder), which is also the order of the rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from geoindex.errors import InvalidArgumentError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif",
                            ".heic", ".heif"})


def is_photo_name(name: str) -> bool:
    """True for a visible file name with an image suffix (any case)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def walk_folder(folder: Path) -> Iterator[Path]:
    """Photo files below ``folder``, depth first, sorted per folder; links followed, loops cut."""
    seen: set[tuple[int, int]] = set()
    stack = [Path(os.path.abspath(folder))]
    while stack:
        current = stack.pop()
        try:
            st = current.stat()
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:  # unreadable folder or dangling link: nothing to find there
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    subfolders.append(Path(entry.path))
                elif entry.is_file() and is_photo_name(entry.name):
                    yield Path(entry.path)
            except OSError:
                continue
        stack.extend(reversed(subfolders))  # visit subfolders in sorted order


def read_list(list_path: Path) -> list[Path]:
    """The paths in a text file, one a line (blank lines and lines starting with # skipped);
    relative paths are relative to the list's folder."""
    try:
        text = Path(list_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"--from-list {str(list_path)!r} cannot be read ({e}): give a UTF-8 text "
                                   "file with one photo path a line") from e
    base = Path(list_path).parent
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(Path(os.path.abspath(base / line)))
    return out


def find_photos(inputs: Iterable[str | Path], from_list: str | Path | None = None) -> list[Path]:
    """Every photo to locate, each once, in order: folders walked, files taken as named (whatever
    their suffix: a named file that is not an image becomes a row with an error), list entries.
    InvalidArgumentError when an input does not exist or nothing is found."""
    out: list[Path] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = str(path)
        if key not in seen:
            seen.add(key)
            out.append(path)

    for item in inputs:
        path = Path(os.path.abspath(item))
        if path.is_dir():
            for photo in walk_folder(path):
                add(photo)
        elif path.exists() or path.is_symlink():
            add(path)
        else:
            raise InvalidArgumentError(f"{str(item)!r} does not exist: give photo files or folders of photos")
    if from_list is not None:
        for path in read_list(Path(from_list)):
            add(path)  # a missing file listed becomes a row with an error: the list is the user's record
    if not out:
        where = ", ".join(repr(str(i)) for i in inputs) or repr(str(from_list))
        raise InvalidArgumentError(
            f"no photos found in {where} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, any case, "
            "hidden files skipped): give a folder that holds photos, or --from-list FILE")
    return out
