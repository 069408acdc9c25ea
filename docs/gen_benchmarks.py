"""The documentation's measured tables, rendered from ``benchmarks/results/*.json`` so they cannot rot.

A page asks for a table with a marker on a line of its own::

    <!-- bench: fidelity -->

and this module replaces the marker with the Markdown table that :data:`TABLES` renders from the
results file, when the site builds. It is an MkDocs hook (``hooks:`` in mkdocs.yml), so
``make docs`` / ``mkdocs build --strict`` always renders the JSON as it is in the checkout; an
unknown marker or a results file that lacks a field fails the build. The prose around the tables
is written by hand. Links to repository files outside docs/ become plain text with the file's path
(the site holds docs/ only). The API reference page works the same way (``<!-- api: exports -->``): one
entry per name in ``geoindex._EXPORTS``, so a name that moves modules moves in the reference too.

Run it as a script to print every table (``python docs/gen_benchmarks.py [NAME ...]``).
"""

from __future__ import annotations

import ast
import functools
import json
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!-- (bench|api|plot): ([a-z0-9_.-]+) -->$", re.MULTILINE)
PLOTS = {"recall_vs_bytes": "recall@10 against bytes per vector, per resolution (recall.json)",
         "recall_vs_ms": "recall@10 against milliseconds per query, per resolution (recall.json)"}


def load(name: str) -> dict:
    """The parsed JSON of ``benchmarks/results/<name>.json``."""
    return json.loads((RESULTS / f"{name}.json").read_text())


def md_table(headers: list[str], rows: list[list], right: str = "") -> str:
    """A Markdown table; ``right`` holds one character per column, ``r`` for right-aligned."""
    align = ["---:" if right[i:i + 1] == "r" else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def num(v, digits: int = 0) -> str:
    """``1234.5`` -> ``"1,234.5"`` with ``digits`` decimals; None -> empty."""
    return "" if v is None else f"{v:,.{digits}f}"


def pct(v, digits: int = 1) -> str:
    return "" if v is None else f"{v:.{digits}f}%"


def machine(name: str, verb: str = "Measured") -> str:
    """One line: where and when a results file was measured."""
    m = load(name)["machine"]
    v = m.get("versions", {})
    return (f"*{verb} on {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('date', '?')[:10]}; "
            f"faiss {v.get('faiss', '?')}, torch {v.get('torch', '?')} (`benchmarks/results/{name}.json`).*")


# -- recall.json (bench_recall.py): the tables recall_report.py prints ---------------------------

def _recall_blocks() -> list[str]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT))
    import recall_report  # noqa: PLC0415  (benchmarks/ is a folder of scripts, not a package)

    return [b.strip() for b in recall_report.report(load("recall")["rows"]).split("\n\n") if b.strip()]


def recall_codecs() -> str:
    """Per resolution, every codec at the report's nprobe (and every re-ranking depth)."""
    blocks = _recall_blocks()[:-3]
    return "\n\n".join(re.sub(r"^(res \d+ land [^\n]*):", r"**\1**", b) for b in blocks)


def recall_defaults() -> str:
    return _recall_blocks()[-3]


def recall_goal() -> str:
    return _recall_blocks()[-2]


def recall_compact() -> str:
    return _recall_blocks()[-1]


def recall_spectrum() -> str:
    spec = load("recall")["spectrum"]
    dims = sorted({int(k) for s in spec.values() for k in s})
    rows = [[res] + [pct(100 * spec[res][str(d)]) for d in dims] for res in sorted(spec, key=int)]
    return md_table(["res"] + [f"energy in the best {d} dims" for d in dims], rows, "r" * (len(dims) + 1))


# -- the other results files ---------------------------------------------------------------------

def quantizer() -> str:
    rows = [[r["quantizer"], pct(100 * r["lists_found"]), pct(100 * r["top10_same"]),
             f"{r['ms_p50']:.2f} / {r['ms_p99']:.2f}", f"{r['refine_ms_p50']:.1f}"] for r in load("quantizer")["rows"]]
    return md_table(["coarse quantizer", "4 best lists found", "top-10 cells as with the scan", "p50 / p99 ms",
                     "with `refine=1` p50"], rows, "-rrrr")


def build() -> str:
    rows = []
    for b in load("build")["builds"]:
        t = b["timings_s"]
        rows.append([b["resolution"], num(b["cells"]), f"{b['factory']} {b['search']}", f"{b['wall_s']:,.1f} s",
                     f"{t['encode']:,.1f} s", f"{t['train']:,.1f} s", f"{b['peak_rss_mib'] / 1024:.1f} GiB",
                     f"{b['index_mb']:,.1f} MB", f"{b['recall_at_1']:.3f}", f"{b['recall_at_10']:.3f}",
                     f"{b['top1_km_median']} / {b['exact_top1_km_median']}", num(b["km_lost_p99"], 1)])
    return md_table(["res", "cells", "index", "wall", "encode", "train", "peak RSS", "index dir", "recall@1",
                     "recall@10", "top-1 median km (index / exact)", "km lost p99"], rows, "rr-rrrrrrrrr")


def encoder() -> str:
    e = load("build")["encoder"]
    return md_table(["points", "batch", "threads", "repeats", "geoindex points/s", "reference points/s", "ratio"],
                    [[num(e["points"]), num(e["batch"]), e["threads"], e["repeats"], num(e["geoindex_points_per_s"]),
                      num(e["reference_points_per_s"]), f"{e['ratio']:.3f}"]], "rrrrrrr")


def query() -> str:
    r5, r6 = load("query_res5-land"), load("query_res6-land")
    six = {r["method"]: r for r in r6["rows"]}

    def cell(r):
        if r is None:
            return "not run"
        return f"{num(r['p50_ms'] / 1000, 1)} s" if "p99_ms" not in r else f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms"

    head = [f"one query, k=10", *(f"res {d['index']['gallery']['resolution']} ({num(d['index']['ntotal'])} cells, "
                                 f"{d['index']['factory']} {d['index']['search']}) p50 / p99" for d in (r5, r6))]
    rows = [[r["method"], cell(r), cell(six.get(r["method"]))] for r in r5["rows"]]
    rows.append(["speed-up over the reference's gallery step, p50", f"{num(r5['speedup_vs_reference_p50'])}x",
                 f"{num(r6['speedup_vs_reference_p50'])}x"])
    return md_table(head, rows, "-rr")


def api() -> str:
    d = load("api")
    rows = [[r["connections"], num(r["requests_per_s"]), f"{r['p50_ms']:.1f} ms", f"{r['p99_ms']:.1f} ms", r["errors"]]
            for r in d["embedding"]]
    emb = md_table(["connections", "req/s", "p50", "p99", "errors"], rows, "rrrrr")
    rows = [[r["mode"], r["connections"], f"{r['requests_per_s']:.1f}", f"{r['p50_ms']:.0f} ms", f"{r['p99_ms']:.0f} ms"]
            for r in d["images"]]
    img = md_table(["images (tiny test CLIP)", "connections", "req/s", "p50", "p99"], rows, "-rrrr")
    rss = d["server_rss_mib"]
    return (f"{emb}\n\n{img}\n\nServer RSS (supervisor + {d['workers']} workers): {num(rss['before'])} MiB before, "
            f"{num(rss['after'])} MiB after; micro-batching speed-up {d['micro_batching_speedup']:.2f}x.")


def store() -> str:
    rows = [[r["rerank"], r["source"], f"{r['recall_at_10']:.3f}", f"{r['ms_single_p50']:.3f}", f"{r['ms_single_p99']:.3f}"]
            for r in load("store")["rows"]]
    return md_table(["R", "exact scores from", "recall@10", "one query p50 (ms)", "p99"], rows, "r-rrr")


def store_concurrent() -> str:
    rows = [[r["threads"], "yes" if r["coalesced"] else "no", f"{r['queries_per_s']:.1f}", f"{r['callers_per_encoder_call']:.2f}"]
            for r in load("store")["concurrent"]]
    return md_table(["server threads", "encoder calls coalesced", "queries/s", "callers per encoder call"], rows, "r-rr")


def serve_memory() -> str:
    rows = [[f"{r['index']}: `{r['factory']}` `{r['search']}`", f"{num(r['index_resident_mb'])} MB",
             f"{num(r['store_mb'])} MB", f"{num(r['idle_vmrss_mib'])} MiB", f"{num(r['after_vmrss_mib'])} MiB",
             f"{num(r['after_rssanon_mib'])} MiB", f"{num(r['after_rssfile_mib'])} MiB", f"{r['http_ms_p50']:.2f} ms"]
            for r in load("serve_memory")["rows"]]
    return md_table(["index", "resident index", "store on disk", "server RSS idle", "after the requests",
                     "of which anonymous", "of which file pages", "HTTP p50"], rows, "-rrrrrrr")


def fidelity() -> str:
    rows = [[r["gallery"], r["search"], num(r["median_km"], 2), num(r["p90_km"], 1), pct(r["within_1km"]),
             pct(r["within_25km"]), pct(r["within_200km"]), pct(r["within_750km"]), pct(r["within_2500km"])]
            for r in load("fidelity")["rows"]]
    return md_table(["gallery", "search", "median km", "p90 km", "≤ 1 km", "≤ 25 km", "≤ 200 km", "≤ 750 km",
                     "≤ 2500 km"], rows, "--rrrrrrr")


def refine() -> str:
    rows = [[r["res"], r["queries_kind"], r["method"], num(r["queries"]), num(r["median_km"], 3), num(r["p90_km"], 2),
             num(r["p99_km"], 1), pct(100 * r["within_1km"]), pct(100 * r["within_25km"]), r["points_per_query"],
             f"{r['ms_batched']:.2f}", f"{r['ms_single_p50']:.2f}"]
            for r in sorted(load("refine")["rows"], key=lambda r: (-r["res"], r["queries_kind"]))]
    return md_table(["res", "queries", "method", "n", "median km", "p90 km", "p99 km", "≤ 1 km", "≤ 25 km", "points",
                     "ms batched", "ms one query"], rows, "r--rrrrrrrrr")


def vs_reference() -> str:
    d = load("vs_reference")
    rows = [[r["system"], f"{r['total_s']:.2f} s", f"{r['image_s']:.2f} s",
             f"{r['gallery_or_search_s']:.2f} s" if r["gallery_or_search_s"] >= 1 else f"{1000 * r['gallery_or_search_s']:.1f} ms"]
            for r in d["rows"]]
    s = d["speedup"]
    return (md_table(["per photo (median)", "total", "image encoder", "gallery step / search"], rows, "-rrr")
            + f"\n\n{s['end_to_end']}x end to end, {num(s['gallery_step'])}x on the gallery step "
              f"({d['images']} images, CLIP towers: {d['clip']}).")


def train_features() -> str:
    rows = [[r["model"], r["photos"], f"{r['photos_per_s']:,.1f}", f"{r['views_per_s']:,.1f}", r["device"]]
            for r in load("train")["features"]]
    return md_table(["feature cache (`features`)", "photos", "photos/s", "views/s", "device"], rows, "-rrr-")


def train_steps() -> str:
    rows = [[r["batch"], num(r["queue"]), r["trained"], f"{r['median_step_s']:.2f}", f"{r['steps_per_s']:.2f}",
             num(r["photos_per_s"])] for r in load("train")["steps"]]
    return md_table(["batch", "queue", "trained", "s/step (median)", "steps/s", "photos/s"], rows, "rr-rrr")


def train_queue() -> str:
    rows = [[num(r["queue"]), pct(r["within_750km"]), pct(r["within_2500km"], 2), num(r["median_km"]),
             f"{r['seconds']:.0f} s"] for r in load("train")["queue"]]
    return md_table(["queue", "within 750 km", "within 2,500 km", "median km", f"{load('train')['queue'][0]['steps']} steps took"],
                    rows, "rrrrr")


def scale_compare() -> str:
    c = load("scale")["compare"]
    rows = [[name, r["wall_s"], num(r["timings_s"]["encode"], 1), num(r["points_per_s_wall"]),
             num(r["encode_points_per_s_per_worker"]), f"{num(r['peak_rss']['tree_mib'])} MiB",
             f"{num(r['peak_rss']['driver_mib'])} MiB", r["peak_rss"]["processes"]] for name, r in c["rows"].items()]
    same = ", ".join(f"`{k}` {'identical' if v else 'DIFFERENT'}" for k, v in c["same_bytes"].items())
    return (md_table(["build (res %d, lists on disk)" % c["resolution"], "wall s", "encode s (summed over workers)",
                      "cells/s (wall)", "cells/s per worker", "peak RSS, whole tree", "peak RSS, driver", "processes"],
                     rows, "-rrrrrrr")
            + f"\n\nRay / one process = {c['ray_speedup']:.2f}x on {c['cores']} cores; {same}.")


def scale_serve() -> str:
    rows = []
    for name, s in load("scale")["serve"].items():
        srv = s["server"]
        rows.append([f"{name}: {num(s['cells'])} cells, `{s['factory']}` `{s['search']}`", f"{s['open_s']:.2f} s",
                     f"{s['cold_ms_50']:.1f} / {s['cold_ms_99']:.1f}", f"{s['warm_ms_50']:.1f} / {s['warm_ms_99']:.1f}",
                     f"{s['disk_bytes'] / 1e9:.1f} GB", f"{num(srv['after_vmrss_mib'])} MiB",
                     f"{num(srv['after_rssanon_mib'])} MiB", f"{srv['http_ms_p50']:.2f} ms"])
    return md_table(["index (lists on disk)", "opens in", "one query cold p50 / p99 ms", "warm p50 / p99 ms",
                     "files", "server RSS after 1,000 requests", "of which anonymous", "HTTP p50"], rows, "-rrrrrrr")


DRIVER_STAGES = ("encode", "train", "add", "hot_columns", "self_check", "metadata_db", "exact_store")


def scale_driver() -> str:
    rows = []
    for label, b in load("scale").get("builds", {}).items():
        stages = b.get("driver_memory_by_stage_mib") or {}
        rows.append([f"{label}: {num(b['cells'])} cells, `{b['factory']}`", f"{num(b['peak_rss']['driver_anon_mib'])} MiB",
                     f"{num(b['peak_rss']['driver_file_mib'])} MiB", f"{num(b['peak_rss']['driver_mib'])} MiB",
                     *(num(stages[st]["anon_mib"]) if st in stages else "-" for st in DRIVER_STAGES)])
    return md_table(["one-process build", "driver peak anonymous", "file-backed", "RSS", *DRIVER_STAGES],
                    rows, "-" + "r" * (3 + len(DRIVER_STAGES)))


def scale_plan() -> str:
    def h(v):
        return "<0.01" if v < 0.01 else f"{v:.2f}"

    rows = [[r["res"], f"{r['cells_M']:,.1f}M", f"{r['lists_GB']} GB", f"{r['hot_GB']} GB", f"{r['store_GB']:,} GB",
             f"{r['duckdb_GB']} GB", f"{r['spill_GB']:,} GB", h(r["h_1cpu"]), h(r["h_8cpu"]), h(r["h_64cpu"]),
             h(r["h_1gpu"]), h(r["h_8gpu"]), h(r["h_driver"]),
             f"{r['driver_anon_gib']} GiB" if "driver_anon_gib" in r else "-"] for r in load("scale")["plan"]["rows"]]
    return md_table(["res", "cells", "lists (RAM or disk)", "hot columns", "fp16 store", "DuckDB", "spill while building",
                     "hours, 1 CPU", "8 CPUs", "64 CPUs", "1 GPU", "8 GPUs", "driver stages",
                     "driver anonymous peak"], rows, "r" * 14)


def images_backends() -> str:
    """The image tower on torch, ONNX Runtime and ONNX Runtime int8 (bench_images.py --backends)."""
    d = load("images")["backends"]
    m = d["machine"]
    rows = [[r["backend"], r["precision"], r["batch"], f"{r['s_per_photo']:.2f}", f"{r['speedup_vs_torch']:.2f}x",
             f"{r['cosine_min']:.7f}", f"{r['max_abs_diff']:.1e}"] for r in d["rows"]]
    load_avg = ", ".join(f"{v:.1f}" for v in m.get("load_average", []))
    return (md_table(["backend", "precision", "batch", "s a photo", "speed-up vs torch (same run)", "cosine min vs torch",
                      "max abs diff"], rows, "--rrrrr")
            + f"\n\n*{d['model']}; {d['threads']} threads, ONNX Runtime {d['onnxruntime']}, opset {d['opset']}, "
              f"{d['rows'][0]['rounds']} interleaved rounds (medians); {m.get('cpu', '?')}, {m.get('date', '?')[:10]}, "
              f"load average {load_avg}: {d['note']} (`benchmarks/results/images.json`).*")


def search_path() -> str:
    """refine=1 and the HTTP embedding endpoint against a default library query (bench_search_path.py)."""
    d = load("search_path")
    m = d["machine"]
    rows = [[r["what"], f"{r['p50_ms']:.2f}", f"{r['ratio']:.2f}x"] for r in d["rows"]]
    parts = d["http"]["parts_ms"]
    return (md_table(["call (one query)", "p50 ms", "ratio"], rows, "-rr")
            + f"\n\n*The request's own steps, timed in process: body parse + validation {parts['parse_validate']:.3f} ms, "
              f"answer JSON {parts['answer_json']:.3f} ms. {d['parameters']['index']}, {d['parameters']['queries']} "
              f"queries x {d['parameters']['rounds']} interleaved rounds; {m.get('cpu', '?')}, {m.get('date', '?')[:10]}, "
              f"load average {m['load_average_at_start'][0]:.1f} to {m['load_average_at_end'][0]:.1f}: {m['note']} "
              "(`benchmarks/results/search_path.json`).*")


def archive() -> str:
    """The archive command end to end against the encoder alone and the decoding alone (bench_archive.py)."""
    d = load("archive")
    m = d["machine"]
    rows = [[r["model"], num(r["photos"]), d["batch"], r["e2e_photos_per_s"], r["encoder_photos_per_s"],
             r["decode_photos_per_s"], f"{r['e2e_over_encoder']:.3f}",
             f"{r['rss_start_mb']:.0f} / {r['rss_end_mb']:.0f} / {r['rss_peak_mb']:.0f}"] for r in d["runs"]]
    k = d["kill_and_resume"]
    load_avg = ", ".join(f"{v:.1f}" for v in m.get("load_average_at_start", [])[:1] + m.get("load_average_at_end", [])[:1])
    return (md_table(["model", "photos", "batch", "end to end photos/s", "encoder alone", "decoding alone",
                      "end to end / encoder", "RSS MB start / end / peak"], rows, "-rrrrrrr")
            + f"\n\n*kill -9 and resume ({num(k['photos'])} photos): killed after {num(k['rows_saved_before_kill'])} "
              f"rows were committed; the same command added {num(k['second_run_new'])}; {num(k['rows'])} rows, "
              f"{num(k['unique_paths'])} distinct paths. Image tower: {d['backend']}. {m.get('cpu', '?')}, "
              f"{m.get('date', '?')[:10]}, load average {load_avg} (start, end): {d['note']} "
              "(`benchmarks/results/archive.json`).*")


TABLES: dict[str, Callable[[], str]] = {
    "recall.codecs": recall_codecs, "recall.defaults": recall_defaults, "recall.goal": recall_goal,
    "recall.compact": recall_compact, "recall.spectrum": recall_spectrum, "quantizer": quantizer, "build": build,
    "encoder": encoder, "query": query, "api": api, "store": store, "store.concurrent": store_concurrent,
    "serve_memory": serve_memory, "fidelity": fidelity, "refine": refine, "vs_reference": vs_reference,
    "train.features": train_features, "train.steps": train_steps, "train.queue": train_queue,
    "scale.compare": scale_compare, "scale.serve": scale_serve, "scale.plan": scale_plan, "scale.driver": scale_driver,
    "images.backends": images_backends, "search_path": search_path, "archive": archive,
}
OWN_PROVENANCE = {"images.backends", "search_path", "archive"}  # tables whose own last line says where and when (a busy machine)
SOURCES = {"recall": "recall", "encoder": "build", "query": "query_res5-land", "store": "store",
           "train": "train", "scale": "scale"}  # table-name prefix -> results file, for the provenance line


def exports() -> dict[str, tuple[str, str]]:
    """``geoindex._EXPORTS`` read from the source (no import): public name -> (module, attribute)."""
    tree = ast.parse((ROOT / "geoindex" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(getattr(t, "id", None) == "_EXPORTS" for t in targets):
                return ast.literal_eval(node.value)
    raise LookupError("geoindex/__init__.py has no _EXPORTS: update docs/gen_benchmarks.py")


def api_reference() -> str:
    """One mkdocstrings entry per public name, in ``_EXPORTS`` order."""
    out = []
    for name, (module, attribute) in exports().items():
        out += [f"## `geoindex.{name}`", "", f"::: {module}.{attribute}", "    options:",
                "      show_root_heading: false", "      heading_level: 3", ""]
    return "\n".join(out)


@functools.cache
def plot_svg(name: str) -> str:
    """A plot of benchmarks/results/recall.json as inline SVG, drawn by the benchmark's own plotting
    code (``benchmarks/recall_report.py:figures``), so the site's plot is the JSON as it is now."""
    import io

    if name not in PLOTS:
        raise KeyError(f"unknown marker <!-- plot: {name} -->: known are {', '.join(sorted(PLOTS))}")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import matplotlib.pyplot as plt
        from recall_report import figures
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = io.StringIO()
    for file_name, fig in figures(load("recall")["rows"], columns=2):
        if file_name == name + ".png":
            fig.set_dpi(72)
            fig.savefig(out, format="svg", metadata={"Date": None})
        plt.close(fig)
    svg = out.getvalue()
    svg = svg[svg.index("<svg"):]  # inline: no XML prolog or doctype
    svg = re.sub(r'^<svg([^>]*?) width="[^"]+" height="[^"]+"', r'<svg\1 style="width: 100%; height: auto"', svg, count=1)  # fits the page
    return f'<figure class="bench-plot" style="width: 100%; margin: 1em 0">\n{svg}\n<figcaption>{PLOTS[name]}</figcaption>\n</figure>'


def render(kind: str, name: str) -> str:
    """The Markdown a marker stands for; raises KeyError naming the known markers for an unknown one."""
    if kind == "plot":
        return plot_svg(name)
    if kind == "api":
        if name != "exports":
            raise KeyError(f"unknown marker <!-- api: {name} -->: the only one is <!-- api: exports -->")
        return api_reference()
    if name not in TABLES:
        raise KeyError(f"unknown marker <!-- bench: {name} -->: known are {', '.join(sorted(TABLES))}")
    if name in OWN_PROVENANCE:
        return TABLES[name]()
    source = SOURCES.get(name.split(".")[0], name)
    verb = "Computed from measured rates" if name == "scale.plan" else "Measured"
    return TABLES[name]() + "\n\n" + machine(source, verb)


def expand(markdown: str) -> str:
    """``markdown`` with every marker replaced by what it stands for."""
    return MARKER.sub(lambda m: render(m[1], m[2]), markdown)


OUTSIDE_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s#:]+)(#[^)\s]*)?\)")


def unlink_outside(markdown: str, page_dir: Path) -> str:
    """Links to repository files outside docs/ (``[the script](../benchmarks/bench_recall.py)``)
    resolve on GitHub but not in the site, which holds docs/ only: there they become the text and
    the file's repository path, ``the script (`benchmarks/bench_recall.py`)``."""
    def repl(m: re.Match) -> str:
        target = (page_dir / m[2]).resolve()
        if target.is_relative_to(DOCS) or not target.exists() or not target.is_relative_to(ROOT):
            return m[0]
        return f"{m[1]} (`{target.relative_to(ROOT).as_posix()}`)"

    return OUTSIDE_LINK.sub(repl, markdown)


def on_page_markdown(markdown: str, page=None, config=None, files=None) -> str:  # MkDocs hook
    try:
        markdown = expand(markdown)
        return markdown if page is None else unlink_outside(markdown, (DOCS / page.file.src_path).parent)
    except (KeyError, LookupError, OSError, ValueError) as e:
        from mkdocs.exceptions import PluginError

        where = page.file.src_path if page is not None else "?"
        raise PluginError(f"{where}: {e}") from e


if __name__ == "__main__":
    for table in sys.argv[1:] or TABLES:
        print(f"## {table}\n\n{render('bench', table)}\n")
