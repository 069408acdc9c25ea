"""``build_index --max-memory``: sizes, the choice among measured configurations, the fit."""

import json
import sys

import pytest

from geoindex.cli.build import main as build_main
from geoindex.errors import InvalidArgumentError
from geoindex.index import budget
from geoindex.index.budget import Measured, parse_size
from tests.helpers import REPO


def test_parse_size():
    assert parse_size("30MB") == 30_000_000 and parse_size("30 mb") == 30_000_000
    assert parse_size("4GiB") == 4 * 2**30 and parse_size("512k") == 512_000 and parse_size("1.5GB") == 1_500_000_000
    assert parse_size("1000") == 1000 and parse_size(1234) == 1234
    for bad in ("30 parsecs", "MB", "-3MB", "0", "1e9", ""):
        with pytest.raises(InvalidArgumentError, match="--max-memory"):
            parse_size(bad)


FAKE = (
    Measured(2, "IVFH3r0,SQ8", 16, 0, None, 0.97, 10.0, 0.05),  # fastest, 8x the codes
    Measured(2, "IVFH3r0,PQ64x4fs", 16, 64, "fp16", 0.96, 20.0, 0.2),
    Measured(2, "IVFH3r0,PQ32x4fs", 16, 128, "fp16", 0.95, 30.0, 0.3),  # smallest
)


@pytest.fixture
def fake_table(monkeypatch):
    monkeypatch.setattr(budget, "MEASURED", FAKE)


def test_choose_takes_the_fastest_that_fits(fake_table):
    def parents(r):
        return 122  # res-0 cells: the lists of a res-2 all-cells gallery

    n = 5882
    sizes = [budget.predict_resident(m.factory, n, 2, parents) for m in FAKE]
    assert sizes[0] > sizes[1] > sizes[2]
    assert budget.choose(10**9, 2, n, parents).factory == "IVFH3r0,SQ8"
    c = budget.choose(sizes[1], 2, n, parents)
    assert (c.factory, str(c.search), c.store) == ("IVFH3r0,PQ64x4fs", "nprobe=16,rerank=64", "fp16")
    assert budget.choose(sizes[1] - 1, 2, n, parents).factory == "IVFH3r0,PQ32x4fs"
    with pytest.raises(InvalidArgumentError, match=rf"the smallest, IVFH3r0,PQ32x4fs \[nprobe=16,rerank=128\], "
                                                   rf"needs {sizes[2]:,} B .*give --max-memory"):
        budget.choose(sizes[2] - 1, 2, n, parents)
    # another resolution borrows the nearest measured one's list, keeping the list depth
    assert budget.choose(10**9, 4, 100_000, lambda r: 500).factory == "IVFH3r2,SQ8"


@pytest.mark.slow
def test_budget_build_fits_its_budget_and_says_so(fake_table, tmp_path, capsys):
    out = tmp_path / "b"
    sizes = [budget.predict_resident(m.factory, 5882, 2, lambda r: 122) for m in FAKE]
    limit = (sizes[2] + sizes[1]) // 2  # room for the smallest only
    assert build_main(["--resolution", "2", "--cells", "all", "--max-memory", str(limit), "--out", str(out),
                       "--no-progress", "-q"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    mem = m["memory"]
    assert mem["max_memory"] == limit and mem["resident_bytes"] <= limit
    assert mem["chosen"]["factory"] == m["index"]["factory"] == "IVFH3r0,PQ32x4fs"
    # the prediction that chose it (from the real list sizes) is the size the index has, within the
    # lists' headers as written
    assert 0 <= mem["chosen"]["predicted_resident_bytes"] - mem["resident_bytes"] <= 122 * 16
    assert m["index"]["search"] == "nprobe=16,rerank=128" and m["store"]["kind"] == "fp16"
    assert m["index"]["factory_requested"] == f"--max-memory {limit}"
    summary = capsys.readouterr().out
    assert f"(budget {limit / 1e6:.1f} MB)" in summary and "fp16 store" in summary


@pytest.mark.slow
def test_budget_refusals(fake_table, tmp_path, capsys):
    assert build_main(["--resolution", "2", "--cells", "all", "--max-memory", "50KB", "--out", str(tmp_path / "s"),
                       "--no-progress", "-q"]) == 2
    assert "fits no measured configuration" in capsys.readouterr().err and not (tmp_path / "s").exists()
    assert build_main(["--resolution", "2", "--max-memory", "1GB", "--factory", "IVFH3,SQ8", "--out",
                       str(tmp_path / "f"), "-q"]) == 2
    assert "--max-memory picks the factory and search settings itself: drop --factory" in capsys.readouterr().err
    assert build_main(["--resolution", "2", "--max-memory", "lots", "--out", str(tmp_path / "g"), "-q"]) == 2
    assert "'lots' is not a size" in capsys.readouterr().err


def test_measured_table_is_what_the_benchmarks_measured():
    """budget.MEASURED must be recall_rules.budget_candidates of benchmarks/results/recall.json."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import recall_rules
    from common import RESULTS

    rows = json.loads((RESULTS / "recall.json").read_text())["rows"]
    assert [Measured(**c) for c in recall_rules.budget_candidates(rows)] == list(budget.MEASURED), \
        "geoindex.index.budget.MEASURED is stale: regenerate it from results/recall.json"
    assert 6 in {m.resolution for m in budget.MEASURED}
