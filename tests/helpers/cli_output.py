"""Run an installed command in a subprocess and parse its stdout strictly: stdout must be the
answer and nothing else (no FAISS notices, no progress, no logs; those belong on stderr).

Reusable: a new machine format adds one entry to PARSERS (the archive formats jsonl, csv and
parquet, the photo outputs), and a new index kind one entry to the fixtures that call
:func:`assert_clean_stdout`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.helpers import REPO

BIN = Path(sys.executable).parent


def _json(text: str):
    return json.loads(text)


def _geojson(text: str):
    data = json.loads(text)
    if data.get("type") != "FeatureCollection":
        raise ValueError(f"not a GeoJSON FeatureCollection: type {data.get('type')!r}")
    return data


def _jsonl(text: str):
    return [json.loads(line) for line in text.splitlines()]


def _csv(text: str):
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError("no CSV rows")
    return rows


# format -> a strict parser of a whole stdout (raises on anything else in it)
PARSERS: dict[str, Callable[[str], object]] = {"json": _json, "geojson": _geojson, "jsonl": _jsonl, "csv": _csv}


def command(name: str) -> str:
    """The installed console script ``name`` beside this Python (the venv's), else on PATH."""
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name) or name


def run(argv: list[str], timeout: float = 300, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run ``argv`` (argv[0] an installed command name) with this checkout on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([command(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def assert_clean_stdout(argv: list[str], fmt: str, **kw):
    """Run ``argv``; it must exit 0 and its whole stdout must parse as ``fmt``. Returns the parsed
    answer. The failure message shows the first lines of stdout and stderr."""
    proc = run(argv, **kw)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}: {proc.stderr[-2000:]}"
    try:
        return PARSERS[fmt](proc.stdout)
    except ValueError as e:
        raise AssertionError(f"{' '.join(argv)}: stdout is not clean {fmt} ({e}); it starts with "
                             f"{proc.stdout[:300]!r}; stderr: {proc.stderr[-500:]!r}") from e
