import logging

import numpy as np
import pytest

logging.getLogger("faiss.loader").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def encoder():
    from geoindex.encoders.location import load_location_encoder

    return load_location_encoder()


@pytest.fixture(scope="session")
def gallery_100k():
    from geoindex.cells.csv_gallery import read_gallery_csv
    from geoindex.encoders.weights import gallery_100k_path

    return read_gallery_csv(gallery_100k_path())


@pytest.fixture(scope="session")
def built_r2(tmp_path_factory):
    """A res-2 land index built once through the CLI entry point (IVFH3 lists, SQ8 codes)."""
    from geoindex.cli.build import main

    out = tmp_path_factory.mktemp("idx") / "r2"
    assert main(["--resolution", "2", "--out", str(out), "--index", "IVFH3,SQ8", "--no-progress", "-q"]) == 0
    return out


def stop_at_shard_write(monkeypatch, n: int) -> None:
    """Make the n-th shard write raise KeyboardInterrupt, as a Ctrl-C'd build would; the earlier
    shards are written. ``monkeypatch.undo()`` restores the real write."""
    from geoindex.store.shards import ShardFile

    real_write, calls = ShardFile.write, {"n": 0}

    def dying_write(self, vectors, meta):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        real_write(self, vectors, meta)

    monkeypatch.setattr(ShardFile, "write", dying_write)


def brute_force_topk(xq: np.ndarray, xb: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    scores = xq @ xb.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return ids[top]


def recall_at(I: np.ndarray, gt: np.ndarray) -> float:
    k = gt.shape[1]
    return float(np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(I, gt)]))
