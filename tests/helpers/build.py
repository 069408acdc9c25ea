"""Interrupting a build in process, for the resume tests (tests/pipeline/)."""


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
