"""Fault injection through the installed commands (issue 38): damaged files of every index kind and
full disks, each run as a user runs it (``geoindex ...`` in a subprocess).

- Same-size overwrites: seeded random 4 KB blocks over every file a manifest lists, one file at a
  time, in each index kind (cells with lists in memory, lists on disk with an exact store, a
  reference photo gallery). ``geoindex locate`` must exit 2 with one error line naming the file,
  or answer exactly what it answered before (rc 0 with a changed answer fails). The server, with
  every file too large to hash before it starts (``--checksum-at-start-mb 0.001``), must answer 503
  and fail /readyz once its background check finds the file.
- Full disks: ``geoindex build --lists-on-disk``, ``geoindex build --photos``, ``geoindex embed`` and
  the archive (``geoindex locate DIR --out``) onto a small tmpfs (root only); where mounting is not
  allowed, build and embed run through ``GEOINDEX_TEST_DISK_FREE`` instead (the allocation meets
  the ``ENOSPC`` a full disk gives) and the photo build and archive cases skip with the reason.
  Each: exit 2, one error line naming a path with the bytes free, no temporary left; the build is
  run again once there is room and resumes.

Slow: ~2 min of CPU (the shared fixtures' builds included), 5-7 min wall on the shared 2-core
machine: ``pytest -m slow tests/cli/test_fault_injection.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

GEOINDEX = str(Path(sys.executable).with_name("geoindex"))
BLOCK = 4096


def run(*args, env=None, timeout=240) -> subprocess.CompletedProcess:
    cmd = [GEOINDEX] if Path(GEOINDEX).exists() else [sys.executable, "-m", "geoindex"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def error_lines(stderr: str) -> list[str]:
    """The lines of a command's error (logged warnings and FAISS's notices are not errors)."""
    assert "Traceback" not in stderr, stderr
    return [ln for ln in stderr.splitlines() if ": error: " in ln]


def overwrite(path: Path, seed: int) -> None:
    """A seeded random 4 KB block at a seeded offset (the whole file when smaller): same size."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, max(1, len(data) - BLOCK + 1)))
    block = rng.integers(0, 256, min(BLOCK, len(data) - start), dtype=np.uint8).tobytes()
    assert block != bytes(data[start:start + len(block)])
    data[start:start + len(block)] = block
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def query(tmp_path_factory):
    from geoindex.encoders.location import encode_latlng, load_location_encoder

    path = tmp_path_factory.mktemp("q") / "q.npy"
    np.save(path, encode_latlng(load_location_encoder(), np.array([[48.85, 2.29], [-33.86, 151.2], [40.7, -74.0]])))
    return path


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    """Res 1, IVFH3 lists on disk and an fp16 exact store (the kinds built_r2 does not cover)."""
    from geoindex.cli.build import main

    out = tmp_path_factory.mktemp("ondisk") / "r1"
    assert main(["--resolution", "1", "--factory", "IVFH3,SQ8", "--lists-on-disk", "--store", "fp16", "--out", str(out),
                 "--no-progress", "-q"]) == 0
    return out


def _kinds(built_r2, on_disk, flat_r2, photos_ref):
    """kind -> (the directory to damage, the locate arguments given the (copied) directory)."""
    return {
        "cells in memory": (built_r2, lambda d: ["--index", d]),
        "lists on disk + exact store": (on_disk, lambda d: ["--index", d]),
        "photo gallery": (photos_ref, lambda d: ["--index", flat_r2, "--photos", d]),
    }


KIND_FILES = {  # the files of each kind flipped here (the rest of a cell index is the same in every kind)
    "cells in memory": None,  # every file its manifest lists
    "lists on disk + exact store": ("vectors.faiss", "lists.ivfdata", "exact.npy"),
    "photo gallery": None,
}


@pytest.mark.parametrize("kind", list(KIND_FILES))
def test_same_size_overwrites_are_refused_or_change_nothing(kind, built_r2, on_disk, flat_r2, photos_ref, query,
                                                            tmp_path):
    src, args = _kinds(built_r2, on_disk, flat_r2, photos_ref)[kind]
    names = KIND_FILES[kind] or list(json.loads((src / "manifest.json").read_text())["files"])
    base = run("locate", *args(src), "--embedding", query, "--format", "json")
    assert base.returncode == 0, base.stderr
    refused = 0
    for seed, name in enumerate(names):
        copy = tmp_path / f"{seed}"
        shutil.copytree(src, copy)
        overwrite(copy / name, seed)
        r = run("locate", *args(copy), "--embedding", query, "--format", "json")
        if r.returncode == 0:
            assert r.stdout == base.stdout, f"{kind}: {name} overwritten changed the answer with exit 0"
            continue
        errors = error_lines(r.stderr)
        assert r.returncode == 2 and r.stdout == "" and len(errors) == 1, (name, r.returncode, r.stderr)
        assert str(copy / name) in errors[0] and "--overwrite" in errors[0], errors[0]
        assert ("--photos" in errors[0]) == (kind == "photo gallery")
        refused += 1
        shutil.rmtree(copy)
    assert refused == len(names)  # checksummed at open: every one of these small files


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("kind,name", [("cells", "exact.npy"), ("photos", "vectors.faiss")])
def test_the_server_finds_a_large_file_s_damage_in_the_background(kind, name, on_disk, flat_r2, photos_ref, tmp_path):
    """Every file over --checksum-at-start-mb 0.001 (1 KB): structure checked at open, bytes hashed after start.
    A flip in vector bytes (no structural check sees it): /readyz 503, every query 503."""
    src = on_disk if kind == "cells" else photos_ref
    copy = Path(shutil.copytree(src, tmp_path / "copy"))
    data = bytearray((copy / name).read_bytes())
    at = len(data) - 700  # inside the last vectors
    data[at:at + 16] = bytes(16)
    (copy / name).write_bytes(bytes(data))
    port = _free_port()
    where = ["--index", copy] if kind == "cells" else ["--index", flat_r2, "--photos", copy]
    cmd = [GEOINDEX] if Path(GEOINDEX).exists() else [sys.executable, "-m", "geoindex"]
    proc = subprocess.Popen([*cmd, "serve", *map(str, where), "--embeddings-only", "--checksum-at-start-mb", "0.001",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base, status = f"http://127.0.0.1:{port}", None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, body = _get(base + "/healthz")
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
                continue
            if status == 503 or body.get("integrity", {}).get("state") == "ok":
                break
            time.sleep(0.3)
        assert status == 503, (status, proc.poll())
        assert str(copy / name) in body["error"]["message"]
        assert _get(base + "/readyz")[0] == 503
        code, body = _get(base + "/v1/locate/embedding", json.dumps({"embeddings": [[1.0] + [0.0] * 511]}).encode())
        assert code == 503 and "rebuild it with" in body["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(30)


# -- full disks ---------------------------------------------------------------------------------------
class SmallDisk:
    """A small tmpfs at ``root`` (root only), or, where mounting is not allowed, a plain folder that
    the commands see as a disk with ``size`` bytes free through GEOINDEX_TEST_DISK_FREE (the same
    ENOSPC path from the allocation on). ``grow`` makes room; ``env`` is what a command needs."""

    def __init__(self, root: Path):
        self.root, self.mounted, self.env = root, False, {}
        root.mkdir()

    def make(self, size: str, free: int | None = None) -> Path:
        """A tmpfs of ``size``; else a folder whose allocations see ``free`` bytes (default ``size``)
        free (the hook is per allocation, not a running total). GEOINDEX_TEST_NO_MOUNT=1 forces the
        folder (to run the unprivileged path as root)."""
        if not os.environ.get("GEOINDEX_TEST_NO_MOUNT"):
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.root)],
                               capture_output=True, text=True)
            self.mounted = r.returncode == 0
        if not self.mounted:
            units = {"k": 2**10, "m": 2**20}
            self.env = {"GEOINDEX_TEST_DISK_FREE": str(free or int(size[:-1]) * units[size[-1]])}
        return self.root

    def require_tmpfs(self) -> None:
        if not self.mounted:
            pytest.skip("cannot mount a small tmpfs here (not root, or no mount): this case needs a real full disk "
                        "(the build and embed cases run through GEOINDEX_TEST_DISK_FREE instead)")

    def grow(self, size: str) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", f"remount,size={size}", str(self.root)], check=True)
        self.env = {}

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(tmp_path / "disk")
    yield disk
    disk.close()


def _no_temporaries(root: Path) -> None:
    left = [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]
    assert not left, left


def _disk_full_line(r: subprocess.CompletedProcess) -> str:
    errors = error_lines(r.stderr)
    assert r.returncode == 2 and len(errors) == 1, (r.returncode, r.stderr)
    assert "the disk is full" in errors[0] and ("bytes free" in errors[0] or "are free" in errors[0]), errors[0]
    return errors[0]


BUILD = ["build", "--resolution", "1", "--factory", "IVFH3,SQ8", "--lists-on-disk", "--store", "fp16", "--no-progress"]


def test_build_onto_a_full_disk_is_one_line_and_resumes(small_disk):
    """Before: a 29-line traceback with 18 MB of .partial, or SIGBUS (exit 135) with the disk left full."""
    disk = small_disk.make("1800k", free=50_000)  # room for the shards and parts, not for the staged index
    r = run(*BUILD, "--out", disk / "idx", env=small_disk.env)
    line = _disk_full_line(r)
    assert str(disk) in line and "run the same command again" in line
    assert not (disk / "idx").exists()
    _no_temporaries(disk)
    small_disk.grow("20m")
    r = run(*BUILD, "--out", disk / "idx", env=small_disk.env)
    assert r.returncode == 0 and "resuming" in r.stderr, r.stderr
    assert run("inspect", disk / "idx").returncode == 0


def test_embed_onto_a_full_disk_leaves_nothing(small_disk, tmp_path):
    """Before: SIGBUS (exit 135) and the .e.npy.tmp left behind."""
    src = tmp_path / "points.csv"
    src.write_text("lat,lng\n" + "".join(f"{i % 160 - 80}.5,{i % 340 - 170}.25\n" for i in range(2000)))
    disk = small_disk.make("1m")
    r = run("embed", src, "-o", disk / "e.npy", "--no-progress", env=small_disk.env)
    assert "needs 4,096,128 bytes" in _disk_full_line(r)
    assert list(disk.iterdir()) == []  # no e.npy, no .e.npy.tmp


def test_photo_build_onto_a_full_tmpfs_is_one_line_and_keeps_its_work(small_disk, photos_ref):
    csv = json.loads((photos_ref / "manifest.json").read_text())["csv"]["path"]
    disk = small_disk.make("400k")
    small_disk.require_tmpfs()
    line = _disk_full_line(run("build", "--photos", csv, "--clip-model", "tiny-test", "--out", disk / "ref",
                               "--no-progress"))
    assert ".ref.partial" in line and "run the same command again" in line
    assert not (disk / "ref").exists() and (disk / ".ref.partial").is_dir()  # the encoded features, kept to resume
    _no_temporaries(disk)  # (the resume itself: tests/photos/test_photos.py; a rerun here would cost a second build)


def test_archive_onto_a_full_tmpfs_is_one_line(small_disk, built_r2, tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (i * 60, 90, 200)).save(photos / f"{i}.jpg")
    disk = small_disk.make("16k")
    small_disk.require_tmpfs()
    (disk / "filler").write_bytes(b"x" * 8192)
    line = _disk_full_line(run("locate", photos, "--index", built_r2, "--clip-model", "tiny-test", "--out",
                               disk / "r.parquet", "--no-progress"))
    assert str(disk) in line
    assert not (disk / "r.parquet").exists()
    _no_temporaries(disk)
    # (resuming an archive is tests/archive/test_archive.py's; a rerun here would cost a second CLIP run)
