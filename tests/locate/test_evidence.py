"""The Geolocator takes evidence sources as plug-ins (geoindex.locate.evidence): it ranks the
source's pool, asks for neighbours inside the query's region and lets the source fuse."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from geoindex.errors import InvalidArgumentError
from geoindex.locate.evidence import EvidenceSource
from geoindex.locate.geolocator import Geolocator
from geoindex.locate.options import QueryOptions
from geoindex.locate.regions import make_filter


class Recorder:
    """An evidence source that reverses the ranked pool and records what it was given."""

    def __init__(self, pool: int):
        self.pool = pool
        self.calls = []

    def neighbours(self, xq, region=None):
        self.calls.append(("neighbours", len(xq), region))
        return [[f"n{q}"] for q in range(len(xq))]

    def fuse(self, result, neighbours, k, resolution):
        self.calls.append(("fuse", len(result.predictions), neighbours, k, resolution))
        return replace(result, predictions=result.predictions[::-1][:k], neighbours=neighbours)


def _queries(n=2):
    xq = np.random.default_rng(0).standard_normal((n, 512)).astype("float32")
    return xq / np.linalg.norm(xq, axis=1, keepdims=True)


def test_evidence_fuses_the_ranked_pool(flat_r2):
    plain = Geolocator(flat_r2)
    xq = _queries()
    source = Recorder(pool=20)
    assert isinstance(source, EvidenceSource)
    geo = Geolocator(flat_r2, evidence=source)
    region = make_filter(countries=["FR"])
    fused = geo.locate(xq, QueryOptions(k=3))
    pool = plain.locate(xq, QueryOptions(k=20))
    for f, p in zip(fused, pool):
        assert [x.cell for x in f.predictions] == [x.cell for x in p.predictions[::-1][:3]]
    assert [f.neighbours for f in fused] == [["n0"], ["n1"]]
    assert source.calls[0] == ("neighbours", 2, None)
    assert source.calls[1] == ("fuse", 20, ["n0"], 3, plain.resolution)
    geo.locate(xq[:1], QueryOptions(k=3, region=region, aggregate_res=1))
    assert source.calls[-2] == ("neighbours", 1, region) and source.calls[-1][-1] == 1


def test_a_pool_smaller_than_k_ranks_k(flat_r2):
    source = Recorder(pool=1)
    geo = Geolocator(flat_r2, evidence=source)
    geo.locate(_queries(1), QueryOptions(k=5))
    assert source.calls[-1][1] == 5


def test_not_an_evidence_source_is_refused(flat_r2):
    with pytest.raises(InvalidArgumentError, match="not an evidence source"):
        Geolocator(flat_r2, evidence="photos-dir")


def test_the_older_photos_argument_is_refused_with_the_new_spelling(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"Geolocator\(evidence=open_photos\('ref'"):
        Geolocator(tmp_path / "not-opened", photos="ref")  # refused before the index is opened
