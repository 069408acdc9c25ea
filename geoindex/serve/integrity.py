"""The server's background check of the index files too large to checksum before it starts.

At open, every file up to ``--checksum-at-start-mb`` is checksummed and the structure of the rest
checked (:mod:`geoindex.store.integrity`); the larger files (res >= 6 vectors, on-disk lists) are
hashed here, in a thread, while the server already answers. Decision: a mismatch makes the server
**degraded and refusing**: every query answers 503 naming the file and the rebuild command,
/healthz and /readyz answer 503 with ``"status": "corrupt"``, and /metrics reports
``geoindex_index_integrity -1``. Wrong places at probability 1.0 are worse than no answer, and a
503 makes a load balancer send the traffic to a healthy replica.
"""

from __future__ import annotations

import logging
import threading
import time

from geoindex.store.manifest import IndexDir, verify_checksum

log = logging.getLogger("geoindex.serve")
STATES = {"verifying": 0, "ok": 1, "corrupt": -1}


class BackgroundVerifier:
    """SHA-256 of the index files over ``small_file_bytes``, in a daemon thread.

    ``state``: ``"verifying"`` (answers are served meanwhile), ``"ok"`` or ``"corrupt"``
    (``error`` then holds the one-line message)."""

    def __init__(self, index_dir: IndexDir, small_file_bytes: int):
        files = index_dir.manifest.get("files", {})
        self.index_dir = index_dir
        self.pending = [name for name, entry in files.items() if entry["bytes"] > small_file_bytes]
        self.bytes = sum(files[name]["bytes"] for name in self.pending)
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
        files = self.index_dir.manifest["files"]
        try:
            for name in self.pending:
                verify_checksum(self.index_dir.path, name, files[name], self.index_dir.manifest)
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
