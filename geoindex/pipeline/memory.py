"""Where the build driver's memory goes: peak anonymous and file-backed resident memory per stage.

``ru_maxrss`` (the manifest's ``peak_rss_mib``) counts every resident page, including the pages of
files the build maps and reads (shards, the exact store being written, ``lists.ivfdata``): those
are the kernel's to drop and say nothing about whether a bigger gallery fits. Anonymous memory
(``RssAnon``: the heap, numpy arrays, FAISS's codes, DuckDB's buffers) is what grows a machine
out of memory, so the build samples both from ``/proc/self/status`` on a thread and charges each
sample to the stage running then. Linux only; elsewhere the record is empty. Freed blocks are
returned to the system as the build goes (:mod:`geoindex.libc`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from geoindex.libc import pin_mmap_threshold, trim

FIELDS = {"RssAnon": "anon_mib", "RssFile": "file_mib"}


def status_mib(pid: int | str = "self") -> dict[str, float]:
    """The memory lines of ``/proc/PID/status`` in MiB by field name (``VmRSS``, ``RssAnon``,
    ``RssFile``, ...); ``{}`` when the process is gone or there is no ``/proc``."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if value.endswith("kB"):
            out[key] = int(value.split()[0]) / 1024
    return out


def read_rss() -> dict[str, float]:
    """This process's resident memory now: ``{"anon_mib", "file_mib"}``; ``{}`` without ``/proc``."""
    status = status_mib()
    return {name: status[field] for field, name in FIELDS.items() if field in status}


class StageMemory:
    """Peak ``RssAnon`` and ``RssFile`` of this process per stage, sampled every ``interval`` seconds.

    Use: ``mem = StageMemory(); mem.stage("encode"); ...; mem.stage("train"); ...; mem.stop()``;
    :meth:`record` gives ``{"driver_anon_mib", "driver_file_mib", "stages": {name: {...}}}``.
    """

    def __init__(self, interval: float = 0.2):
        self._current = "start"
        self._peaks: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="geoindex-stage-memory", daemon=True)
        pin_mmap_threshold()  # a build frees shard-sized arrays all along: map them, so they go back
        self._sample()
        self._thread.start()

    def stage(self, name: str) -> None:
        """Charge the samples from now on to ``name`` (the previous stage gets a last sample). The
        blocks the previous stage freed go back to the system first (:func:`geoindex.libc.trim`),
        so a stage is charged what it holds, not what glibc kept of the stages before it."""
        self._sample()
        trim()
        with self._lock:
            self._current = name
        self._sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def record(self) -> dict:
        """Peaks in MiB over the whole build and per stage (stages in the order they ran)."""
        with self._lock:
            stages = {k: {f: round(v, 1) for f, v in p.items()} for k, p in self._peaks.items()}
        if not stages:
            return {}
        return {"driver_anon_mib": max(p.get("anon_mib", 0.0) for p in stages.values()),
                "driver_file_mib": max(p.get("file_mib", 0.0) for p in stages.values()),
                "stages": stages}

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        now = read_rss()
        if not now:
            return
        with self._lock:
            peak = self._peaks.setdefault(self._current, {})
            for key, value in now.items():
                peak[key] = max(peak.get(key, 0.0), value)
