"""A filter naming a country with no cells answers from the others and says so (issue 34, item 5)."""

import json

import numpy as np

from geoindex.cli.locate import main as geolocate
from geoindex.encoders.location import encode_latlng


def test_empty_countries_are_named_and_the_others_answer(fr_r2, encoder, tmp_path, capsys):
    np.save(tmp_path / "q.npy", encode_latlng(encoder, np.array([[48.8584, 2.2945]])))
    argv = ["--index", str(fr_r2), "--embedding", str(tmp_path / "q.npy"), "-k", "2", "--format", "json"]
    assert geolocate([*argv, "--country", "FR", "--country", "ES"]) == 0
    captured = capsys.readouterr()
    [out] = json.loads(captured.out)
    assert all(p["country"] == "FR" for p in out["predictions"])
    assert len(out["warnings"]) == 1 and "ES has no cells in this index" in out["warnings"][0]
    assert "warning: country filter: ES" in captured.err
    assert geolocate([*argv, "--country", "FR"]) == 0
    assert "warnings" not in json.loads(capsys.readouterr().out)[0]
    assert geolocate([*argv, "--country", "ES", "--country", "DE"]) == 2
    assert "'ES' and 'DE' have no cells in this index" in capsys.readouterr().err
