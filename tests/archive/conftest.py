"""Fixtures of the archive tests: the res-1 Flat index the photo folders are located against."""

import pytest


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from geoindex.cli.build import main as build

    out = tmp_path_factory.mktemp("idx") / "r1"
    assert build(["--resolution", "1", "--out", str(out), "--factory", "Flat", "--no-progress", "-q"]) == 0
    return out
