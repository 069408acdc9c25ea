"""A full disk is one line naming the file, the bytes it needs and the bytes free, exit 2, never a
SIGBUS or a traceback, and nothing half-written left (issue 38, items 3 and 5).

Files written through a memory map are allocated whole first (``posix_fallocate``); these tests
make that allocation meet a small disk through ``GEOINDEX_TEST_DISK_FREE``, which makes it fail
with the ``ENOSPC`` a real full disk gives (the same handling after it). The same cases on a real
small tmpfs are in ``tests/cli/test_fault_injection.py`` (slow, skipped where mounting is not allowed).
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from geoindex.atomic import TEST_FREE_ENV, DiskFullError, open_memmap, reserve, write_error
from geoindex.errors import WriteError


def test_a_mapped_file_that_does_not_fit_is_refused_before_any_write(tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_FREE_ENV, "100000")
    with pytest.raises(DiskFullError, match=r"x\.npy needs 2,048,128 bytes and 100,000 are free") as e:
        open_memmap(tmp_path / "x.npy", np.float32, (1000, 512))
    assert len(str(e.value).splitlines()) == 1 and not (tmp_path / "x.npy").exists()
    monkeypatch.delenv(TEST_FREE_ENV)
    a = open_memmap(tmp_path / "x.npy", np.float32, (1000, 512))
    assert os.stat(tmp_path / "x.npy").st_blocks * 512 >= a.nbytes  # allocated, not sparse


def test_a_real_enospc_from_fallocate_is_the_same_line(tmp_path, monkeypatch):
    (tmp_path / "f").touch()

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(DiskFullError, match=r"f needs 4,096 bytes and [\d,]+ are free"):
        reserve(tmp_path / "f", 4096, "free space and run it again")


def test_numpy_short_write_is_a_full_disk_not_a_traceback(tmp_path):
    """The issue's lists-on-disk build died on `OSError: 7013952 requested and 2809856 written`."""
    error = write_error(tmp_path / "parts" / "00000.faiss", OSError("7013952 requested and 2809856 written"))
    assert isinstance(error, WriteError) and "the disk is full writing" in str(error) and "bytes free" in str(error)


def test_embed_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """Before: SIGBUS (exit 135) and a 614 MB .e.npy.tmp left behind."""
    from geoindex.cli.embed import main

    src = tmp_path / "points.csv"
    src.write_text("lat,lng\n" + "".join(f"{i % 80}.5,{i % 170}.25\n" for i in range(300)))
    monkeypatch.setenv(TEST_FREE_ENV, "50000")
    assert main([str(src), "-o", str(tmp_path / "e.npy"), "--no-progress"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and f"{tmp_path / 'e.npy'} needs 614,528 bytes and 50,000 are free" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.csv"]  # no e.npy, no .e.npy.tmp
