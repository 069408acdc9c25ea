"""`geoindex embed` leaves no hidden temporary behind: removed on SIGTERM, removed by the next run
after SIGKILL; an -o it cannot write is one line before any work."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from geoindex.atomic import temp_path
from geoindex.cli.embed import main


def write_points(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    pts = np.column_stack((rng.uniform(-80, 80, n), rng.uniform(-180, 180, n)))
    np.savetxt(path, pts, delimiter=",", header="lat,lng", comments="", fmt="%.5f")
    return path


def start_and_wait_for_temp(src: Path, out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "geoindex", "embed", str(src), "-o", str(out), "--no-progress",
                             "--batch-size", "1024"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not temp_path(out).exists() and proc.poll() is None:
        time.sleep(0.05)
    assert temp_path(out).exists(), "the run never started writing"
    return proc


@pytest.mark.slow
def test_sigterm_removes_the_temporary(tmp_path):
    src, out = write_points(tmp_path / "p.csv", 300_000), tmp_path / "e.npy"
    proc = start_and_wait_for_temp(src, out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted; nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


@pytest.mark.slow
def test_sigkill_leftover_is_removed_by_the_next_run(tmp_path):
    src, out = write_points(tmp_path / "p.csv", 300_000), tmp_path / "e.npy"
    proc = start_and_wait_for_temp(src, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert temp_path(out).exists()  # SIGKILL: no handler runs
    small = write_points(tmp_path / "small.csv", 50)
    assert main([str(small), "-o", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "p.csv", "small.csv"]
    assert np.load(out).shape == (50, 512)


def test_unwritable_out_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import geoindex.encoders.location_files as lf

    def no_model(*args, **kwargs):
        raise AssertionError("the encoder loaded before the refusal")

    monkeypatch.setattr(lf, "load_location_encoder", no_model)
    src = write_points(tmp_path / "p.csv", 5)
    assert main([str(src), "-o", "/sys/geoindex-test.npy", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "/sys/geoindex-test.npy" in err and err.count("\n") == 1, err
    assert "Traceback" not in err
