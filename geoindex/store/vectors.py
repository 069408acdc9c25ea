"""A gallery directory's FAISS file, opened for queries: one reader for cell indexes and photo
galleries alike.

Lists on disk (``lists.ivfdata``) are memory-mapped from beside ``vectors.faiss``, wherever the
directory is now; FAISS's notices go to stderr (stdout is a command's answer); an unreadable or
damaged file is one :class:`~geoindex.errors.IndexDirError` that says what to do.
"""

from __future__ import annotations

from pathlib import Path

import faiss

from geoindex.errors import IndexDirError
from geoindex.index.io import read_index
from geoindex.store.manifest import unreadable


def open_vectors(path: Path, hint: str) -> faiss.Index:
    """The FAISS index in file ``path``; ``hint``: how to rebuild it, ending the error's message."""
    try:
        with open(path, "rb"):  # permissions and I/O errors, in words FAISS does not give
            pass
        return read_index(path, faiss.IO_FLAG_ONDISK_SAME_DIR)
    except OSError as e:
        raise IndexDirError(f"{path} {unreadable(e)}") from e
    except RuntimeError as e:  # FAISS: a bad header, a truncated body, an unreadable lists file
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise IndexDirError(f"{path} is not a readable FAISS index (FAISS says: {first[:200]}): {hint}") from e
