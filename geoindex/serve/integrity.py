"""The server's background check of the index files too large to checksum before it starts.

At open, every file up to ``--checksum-at-start-mb`` is checksummed and the structure of the rest
checked (:mod:`geoindex.store.integrity`); the larger files (res >= 6 vectors, on-disk lists) are
hashed here, in a thread, while the server already answers; with ``--photos``, the reference
gallery's large files too (its small ones and its structure are checked at open in the same way:
:class:`geoindex.photos.gallery.PhotoGallery`). Decision: a mismatch makes the server
**degraded and refusing**: every query answers 503 naming the file and the rebuild command,
/healthz and /readyz answer 503 with ``"status": "corrupt"``, and /metrics reports
``geoindex_index_integrity -1``. Wrong places at probability 1.0 are worse than no answer, and a
503 makes a load balancer send the traffic to a healthy replica.
"""

from __future__ import annotations

import logging
import threading
import time

from geoindex.store.manifest import verify_checksum

log = logging.getLogger("geoindex.serve")
STATES = {"verifying": 0, "ok": 1, "corrupt": -1}


class BackgroundVerifier:
    """SHA-256 of the files over ``small_file_bytes`` of each directory given, in a daemon thread.

    ``dirs``: verified directories whose manifest lists their files, each with ``path``,
    ``manifest`` and ``hint`` (the rebuild command): the cell index
    (:class:`~geoindex.store.manifest.IndexDir`) and, when served, the reference photo gallery;
    None entries are skipped. ``state``: ``"verifying"`` (answers are served meanwhile), ``"ok"``
    or ``"corrupt"`` (``error`` then holds the one-line message). ``pending`` lists the files,
    as paths."""

    def __init__(self, dirs, small_file_bytes: int):
        dirs = [d for d in (dirs if isinstance(dirs, (list, tuple)) else [dirs]) if d is not None]
        self._todo = [(d, name, entry) for d in dirs for name, entry in d.manifest.get("files", {}).items()
                      if entry["bytes"] > small_file_bytes]
        self.pending = [str(d.path / name) for d, name, _ in self._todo]
        self.bytes = sum(entry["bytes"] for _, _, entry in self._todo)
        self.state = "verifying" if self.pending else "ok"
        self.error: str | None = None
        self.seconds: float | None = None if self.pending else 0.0
        self._thread = threading.Thread(target=self._run, name="verify-index", daemon=True)

    def start(self) -> BackgroundVerifier:
        if self.pending:
            log.info("verifying %d large index file(s), %.0f MiB, in the background", len(self.pending),
                     self.bytes / 2**20)
            self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        start = time.perf_counter()
        try:
            for d, name, entry in self._todo:
                verify_checksum(d.path, name, entry, d.manifest, d.hint)
        except Exception as e:  # noqa: BLE001 (IndexDirError, or anything else: the index is not trusted)
            self.error = str(e)
            self.state = "corrupt"
            log.error("index failed its background check, refusing queries: %s", e)
        else:
            self.state = "ok"
        self.seconds = time.perf_counter() - start

    def report(self) -> dict:
        """For /healthz: the state, the files and bytes checked, and the error when corrupt."""
        out = {"state": self.state, "files": self.pending, "bytes": self.bytes, "seconds": self.seconds}
        if self.error:
            out["error"] = self.error
        return out
