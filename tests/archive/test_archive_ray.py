"""``geoindex locate DIR --out FILE --ray``: the archive on a local Ray cluster gives the rows the
one-process run gives; a killed actor's shard is retried, and a run resumed from another's parts
does only the rest. Tiny random CLIP, res-1 Flat index, a small photo folder (tests/helpers/archive.py)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

pytest.importorskip("ray")

from geoindex.cli.locate import main  # noqa: E402
from tests.helpers.archive import archive, colour, jpeg_bytes, locate, write  # noqa: E402

SHARD = ["--commit-every", "4", "--no-progress"]  # 15 photos: 4 shards of up to 4


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    archive(root)  # 6 rows: 3 located, 3 errors
    for i in range(9):
        write(root / "more" / f"p{i:02d}.jpg", jpeg_bytes(colour(i + 1)))
    return root


@pytest.fixture(scope="module")
def one_process(index, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "rows.parquet"
    assert locate(index, photos, "--out", out, *SHARD) == 0
    return out


def table(path) -> list[dict]:
    """Every row and column (run_id included: the settings are the same), in path order."""
    return sorted(pq.read_table(path).to_pylist(), key=lambda r: r["path"])


def summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.ray
def test_ray_archive_is_the_one_process_archive(cluster, index, photos, one_process, tmp_path, capsys):
    out = tmp_path / "ray.parquet"
    assert locate(index, photos, "--out", out, *SHARD, "--ray") == 0
    assert summary(capsys)["new"] == 15
    ours, theirs = table(out), table(one_process)
    assert len(ours) == 15 and sum(1 for r in ours if r["error"]) == 3
    assert ours == theirs


@pytest.mark.ray
def test_killed_actor_is_retried_and_a_resumed_run_does_only_the_rest(cluster, index, photos, one_process,
                                                                       tmp_path, capsys):
    out = tmp_path / "ray.parquet"
    first = sorted(str(p) for p in (photos / "more").glob("*.jpg"))[:5]
    listing = write(tmp_path / "first.txt", "\n".join(first).encode())
    assert locate(index, "--from-list", listing, "--out", out, *SHARD) == 0  # 5 rows in this process
    assert summary(capsys)["new"] == 5
    (cluster / "archive-000001.kill").touch()  # the second of the 3 shards left: its actor dies holding it
    assert locate(index, photos, "--out", out, *SHARD, "--ray") == 0
    assert (cluster / "archive-000001.killed").exists()
    assert summary(capsys)["new"] == 10
    assert table(out) == table(one_process)


@pytest.mark.parametrize("extra, message", [
    ([], "--ray needs --out"),
    (["--out", "x.parquet", "--joint"], "--joint"),
    (["127.0.0.1:9", "--out", "x.parquet"], "nothing answers there"),  # ray.init would wait for it without end
])
def test_ray_refusals_come_before_any_work(photos, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)  # no index is opened, no model loaded: a missing one is not reached
    assert main([str(photos), "--index", str(tmp_path / "no-index"), "--ray", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.ray
def test_an_actor_refusal_is_the_one_line_error_of_one_process(cluster, photos, tmp_path, capsys):
    """The driver opens no index: a missing one is found by the actors, and their error is raised as is."""
    out = tmp_path / "ray.parquet"
    assert main([str(photos), "--index", str(tmp_path / "no-index"), "--out", str(out), "--clip-model", "tiny-test",
                 *SHARD, "--ray"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no-index' does not exist: build one" in last and "Ray" not in last
