"""The README and the documentation site: short, every relative link resolves, every measured table
is rendered from benchmarks/results/*.json and every public name has a reference entry.

Fast (no site build): `make docs` (mkdocs build --strict) checks the rest, in CI.
"""

from __future__ import annotations

import importlib.util
import json
import re
import unicodedata
from pathlib import Path

import pytest

from tests.helpers import REPO

ROOT = REPO
DOCS = ROOT / "docs"
README_MAX_LINES = 350
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (mkdocs) gives a heading."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(re.sub(r"[`*]", "", m[1])) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text()))
    return [m[1] for m in LINK.finditer(text)]


def gen():
    spec = importlib.util.spec_from_file_location("gen_benchmarks", DOCS / "gen_benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, over {README_MAX_LINES}: move detail into docs/"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    bad = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(bad)


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Here\n\n[ok](p.md#here) [gone](nope.md) `[code](x.md)` [bad anchor](p.md#there)\n")
    assert links(page) == ["p.md#here", "nope.md", "p.md#there"]
    assert anchors(page) == {"here"}


def test_site_nav_names_existing_pages():
    yaml = pytest.importorskip("yaml")
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def walk(entry):
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, list):
            for e in entry:
                yield from walk(e)
        elif isinstance(entry, dict):
            for v in entry.values():
                yield from walk(v)

    named = list(walk(nav))
    assert named and all((DOCS / p).is_file() for p in named), [p for p in named if not (DOCS / p).is_file()]


def test_every_marker_renders_from_the_results():
    g = gen()
    used = {m[2] for page in DOCS.rglob("*.md") for m in g.MARKER.finditer(page.read_text()) if m[1] == "bench"}
    assert used, "no page asks for a measured table"
    assert used <= set(g.TABLES), used - set(g.TABLES)
    for name in used:
        table = g.render("bench", name)
        assert table.count("\n|") >= 2 and "benchmarks/results/" in table, name


def test_tables_show_the_json_values():
    g = gen()
    rows = json.loads((ROOT / "benchmarks/results/fidelity.json").read_text())["rows"]
    table = g.render("bench", "fidelity")
    for r in rows:
        assert f"| {r['gallery']} | {r['search']} | {r['median_km']:,.2f} |" in table
    chosen = json.loads((ROOT / "benchmarks/results/recall.json").read_text())["chosen"]
    defaults = g.render("bench", "recall.defaults")
    assert all(f"| {c['recall_at_10']:.3f} |" in defaults for c in chosen)


def test_unknown_marker_fails_the_build():
    g = gen()
    with pytest.raises(KeyError, match="known are"):
        g.expand("text\n<!-- bench: no-such-table -->\n")
    assert g.expand("no markers\n") == "no markers\n"


def test_api_reference_lists_every_public_name():
    import geoindex

    g = gen()
    assert g.exports() == geoindex._EXPORTS
    reference = g.expand((DOCS / "reference.md").read_text())
    for name, (module, attribute) in geoindex._EXPORTS.items():
        assert f"::: {module}.{attribute}" in reference, name


def test_readme_headline_figures_match_the_results():
    """The README's one table of figures says what recall.json and fidelity.json hold."""
    readme = (ROOT / "README.md").read_text()

    def row(label: str) -> list[str]:
        line = next(ln for ln in readme.splitlines() if ln.startswith(f"| {label} |"))
        return [c.strip() for c in line.strip("|").split("|")[1:]]

    chosen = sorted(json.loads((ROOT / "benchmarks/results/recall.json").read_text())["chosen"],
                    key=lambda c: c["resolution"])
    assert [c["resolution"] for c in chosen] == [3, 4, 5, 6]
    assert row("recall@10 against exact search") == [f"{c['recall_at_10']:.3f}" for c in chosen]
    assert [v.split()[0] for v in row("bytes a vector in RAM (+ exact store on disk)")] == \
        [f"{c['bytes_per_vector']:,.0f}" for c in chosen]
    assert [v.split()[0] for v in row("top-1 km lost, p99")] == [f"{c['km_lost_p99']:,.0f}" for c in chosen]
    assert [v.split(" / ")[0] for v in row("ms a query, one thread: in a batch of 2,000 / one at a time (p50)")] == \
        [f"{c['ms_per_query']:.3f}" for c in chosen]
    exact = {r["gallery"].split(" land")[0]: r for r in json.loads(
        (ROOT / "benchmarks/results/fidelity.json").read_text())["rows"] if r["search"] == "exact"}
    assert row("top-1 cell to the true place, median (exact search)") == \
        [f"{exact[f'H3 res {res}']['median_km']:.1f} km" for res in (3, 4, 5, 6)]


def test_links_outside_docs_become_paths_in_the_site():
    g = gen()
    text = ("[script](../benchmarks/bench_recall.py) [page](building.md) [gone](../no-such-file.py) "
            "[readme](../README.md#headline-figures) ![pic](web-page.png)")
    out = g.unlink_outside(text, DOCS)
    assert out == ("script (`benchmarks/bench_recall.py`) [page](building.md) [gone](../no-such-file.py) "
                   "readme (`README.md`) ![pic](web-page.png)")


@pytest.mark.slow  # matplotlib draws both figures: ~5 s on 2 cores
def test_plot_markers_draw_the_recall_json():
    """<!-- plot: NAME -->: the benchmark's own figure of recall.json, inline SVG; an unknown plot fails."""
    g = gen()
    used = {m[2] for page in DOCS.rglob("*.md") for m in g.MARKER.finditer(page.read_text()) if m[1] == "plot"}
    assert used == set(g.PLOTS)
    svg = g.render("plot", "recall_vs_bytes")
    assert svg.startswith("<figure") and "<svg" in svg and "<?xml" not in svg
    assert "bytes per vector" in svg and "H3 res 3 land (13,483 cells)" in svg  # axis and a panel from the JSON
    with pytest.raises(KeyError, match="known are"):
        g.render("plot", "no-such-plot")
