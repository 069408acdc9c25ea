"""Search settings: one parse at the edge, one merge over the index's default."""

import json

import numpy as np
import pytest

from geoindex import Geolocator, QueryOptions, SearchSettings
from geoindex.errors import InvalidArgumentError


def test_parse_names_each_knob_and_prints_canonically():
    s = SearchSettings.parse(" rerank=32 , nprobe=16 ")
    assert (s.nprobe, s.ef_search, s.rerank, s.faiss_extra) == (16, None, 32, ())
    assert str(s) == "nprobe=16,rerank=32" and s.faiss_string() == "nprobe=16"
    assert str(SearchSettings.parse("efSearch=64,k_factor=8")) == "efSearch=64,k_factor=8"
    assert SearchSettings.parse("k_factor=1.5").faiss_extra == (("k_factor", 1.5),)
    assert SearchSettings.parse("") == SearchSettings.parse(None) == SearchSettings()
    assert str(SearchSettings()) == "" and not SearchSettings().names_faiss
    assert SearchSettings.parse(str(s)) == s


def test_over_lets_the_call_win_and_inherits_the_rest():
    index = SearchSettings.parse("nprobe=4,k_factor=8,rerank=32")
    assert SearchSettings.parse("nprobe=64").over(index) == SearchSettings.parse("nprobe=64,k_factor=8,rerank=32")
    assert SearchSettings.parse("rerank=0").over(index).rerank_depth == 0  # a call turns re-ranking off
    assert SearchSettings().over(index) == index
    assert SearchSettings.parse("k_factor=2").over(index).faiss_extra == (("k_factor", 2),)


@pytest.mark.parametrize("text,match", [
    ("nprobe", "is not name=number"),
    ("nprobe=abc", "is not name=number"),
    ("no pe=3", "is not name=number"),
    ("nprobe=0", "integer >= 1"),
    ("nprobe=1.5", "integer >= 1"),
    ("efSearch=-2", "integer >= 1"),
    ("rerank=5000", "rerank takes an integer 0..4096"),
])
def test_bad_strings_name_the_part_and_the_fix(text, match):
    with pytest.raises(InvalidArgumentError, match=match):
        SearchSettings.parse(text)


def test_query_options_parse_a_string_once():
    options = QueryOptions(search="nprobe=8,rerank=4")
    assert options.search == SearchSettings(nprobe=8, rerank=4)
    assert QueryOptions().search == SearchSettings()


@pytest.fixture
def parse_count(monkeypatch):
    calls = []
    real = SearchSettings.parse.__func__

    def counting(cls, text):
        calls.append(text)
        return real(cls, text)

    monkeypatch.setattr(SearchSettings, "parse", classmethod(counting))
    return calls


def test_one_parse_per_query_string(built_r2, encoder, parse_count, tmp_path, capsys):
    """The CLI parses its --search flag once and the index's stored string once, on open; the
    query path itself never parses: locate, search and re-ranking see only the object."""
    from geoindex.encoders.location import encode_latlng
    from geoindex.cli.locate import main

    xq = encode_latlng(encoder, np.array([[48.8584, 2.2945], [-33.8568, 151.2153]]))
    np.save(tmp_path / "q.npy", xq)
    assert main(["--embedding", str(tmp_path / "q.npy"), "--index", str(built_r2), "--search", "nprobe=8,rerank=4",
                 "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert sorted(parse_count, key=str) == sorted(["nprobe=16", "nprobe=8,rerank=4"], key=str)

    geo = Geolocator(built_r2)
    options = QueryOptions(k=3, search="nprobe=8,rerank=4")
    parse_count.clear()
    for _ in range(3):
        geo.locate(xq, options)
    assert parse_count == []
