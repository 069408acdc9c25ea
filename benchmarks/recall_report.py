"""Presentation of benchmarks/results/recall.json: the README tables and the two plots.

Kept apart from bench_recall.py, which measures; ``bench_recall.py --report`` calls these. The
decision rules both use are in recall_rules.py.
"""

from __future__ import annotations

from common import RESULTS
from recall_rules import RECALL_TARGET, REPORT_NPROBE, best_compact, chosen_all, edge_km, meets_goal


def plot(rows: list[dict]) -> None:
    """Write the two plots beside recall.json (recall_vs_bytes.png, recall_vs_ms.png)."""
    import matplotlib.pyplot as plt

    for name, fig in figures(rows):
        fig.savefig(RESULTS / name, dpi=110)
        plt.close(fig)


def figures(rows: list[dict], columns: int | None = None) -> list[tuple[str, object]]:
    """The two plots of recall.json's rows as matplotlib figures, (file name, figure) each: recall@10
    against bytes per vector and against ms per query, a panel per resolution. The docs site draws
    the same figures (docs/gen_benchmarks.py), ``columns`` panels a row (default: all in one row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import re

    def codec_of(factory: str) -> str:  # one colour per codec across panels: IVF345 and IVF4096 alike
        return re.sub(r"^(OPQ\d+,)?IVF(H3r)?\d+", lambda m: (m[1] or "") + ("IVFH3" if m[2] else "IVF"), factory)

    palette = plt.get_cmap("tab20").colors
    colour = {c: palette[i % len(palette)] for i, c in enumerate(sorted({codec_of(r["factory"]) for r in rows}))}
    res_list = sorted({r["resolution"] for r in rows})
    out = []
    for name, xkey, xlabel, logx in (("recall_vs_bytes.png", "bytes_per_vector", "bytes per vector", True),
                                     ("recall_vs_ms.png", "ms_per_query", "ms per query (1 thread)", True)):
        ncols = min(columns or len(res_list), len(res_list))
        nrows = -(-len(res_list) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 4.2 * nrows), squeeze=False)
        for ax in axes.flat[len(res_list):]:
            ax.set_visible(False)
        for ax, res in zip(axes.flat, res_list):
            sub = [r for r in rows if r["resolution"] == res and r["queries"] == "photo"]
            for factory in dict.fromkeys(r["factory"] for r in sub):
                pts = sorted((r[xkey], r["recall_at_10"]) for r in sub if r["factory"] == factory)
                if xkey == "bytes_per_vector":
                    pts = [max(pts, key=lambda p: p[1])] if factory == "Flat" else [
                        (r[xkey], r["recall_at_10"]) for r in sub if r["factory"] == factory and
                        r["nprobe"] == REPORT_NPROBE]
                if pts:
                    xs, ys = zip(*pts)
                    marker = "s" if "rerank" in factory else "^" if "IVFH3" in factory else "o"
                    ax.plot(xs, ys, marker + ("-" if len(pts) > 1 else ""), label=factory, markersize=4,
                            color=colour[codec_of(factory)])
            ax.axhline(RECALL_TARGET, color="grey", lw=0.8, ls="--")
            ax.set_title(f"H3 res {res} land ({sub[0]['n']:,} cells)" if sub else f"res {res}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("recall@10 vs exact")
            if logx:
                ax.set_xscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=5.5, loc="lower right")
        fig.suptitle(f"recall@10 against exact search, real photo locations ("
                     f"{'nprobe ' + str(REPORT_NPROBE) if xkey == 'bytes_per_vector' else 'every nprobe'}; "
                     "o k-means lists, ^ H3-parent lists, s exact re-ranking)", fontsize=9)
        fig.tight_layout()
        out.append((name, fig))
    return out


def report(rows: list[dict]) -> str:
    """README tables from saved rows: per resolution every codec at REPORT_NPROBE, then the
    chosen default per resolution."""
    def fmt(v, digits=3):
        return "" if v is None else f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"

    out = []
    for res in sorted({r["resolution"] for r in rows}):
        here = [r for r in rows if r["resolution"] == res and r["nprobe"] in (None, REPORT_NPROBE)]
        noisy_r10 = {r["factory"]: r["recall_at_10"] for r in here if r["queries"] == "photo+noise"}
        out += [f"res {res} land ({here[0]['n']:,} cells), nprobe {REPORT_NPROBE} (Flat: exact scan):", "",
                "| codec | bytes/vector | build s | recall@1 | recall@10 | km lost p99 | ms/query | recall@10, noisy queries |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in here:
            if r["queries"] == "photo":
                out.append(f"| {r['factory']} | {r['bytes_per_vector']:,.0f} | {r['build_s']:,.1f} | {r['recall_at_1']:.3f} | "
                           f"{r['recall_at_10']:.3f} | {r['km_lost_p99']:,.0f} | {r['ms_per_query']:.3f} | "
                           f"{fmt(noisy_r10.get(r['factory']))} |")
        out.append("")
    out += ["| res | default (least code bytes at recall@10 >= 0.95) | nprobe | bytes/vector | recall@10 | km lost p99 | ms/query | build s |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in chosen_all(rows):
        out.append(f"| {c['resolution']} | {c['factory']} | {c['nprobe']} | {c['bytes_per_vector']:,.0f} | "
                   f"{c['recall_at_10']:.3f} | {c['km_lost_p99']:,.0f} | {c['ms_per_query']:.3f} | {c['build_s']:,.1f} |")
    out += ["", "| res | code of <= 128 B | nprobe | bytes/vector | recall@1 | recall@10 | km lost p99 | ms/query (batch) | "
                "ms one query (p50) | H3 edge km | goal met |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for res in sorted({r["resolution"] for r in rows}):
        picks = [best_compact(rows, res, rerank=False), best_compact(rows, res, rerank=True),
                 best_compact(rows, res, rerank=True, by="bytes_per_vector")]
        for i, best in enumerate(picks):
            if best and best not in picks[:i]:
                out.append(f"| {res} | {best['factory']} | {best['nprobe']} | {best['bytes_per_vector']:,.0f} | {best['recall_at_1']:.3f} | "
                           f"{best['recall_at_10']:.3f} | {best['km_lost_p99']:,.1f} | {best['ms_per_query']:.3f} | "
                           f"{fmt(best.get('ms_single_p50'))} | "
                           f"{edge_km(res):.1f} | {'yes' if meets_goal(best) else 'no'} |")
    return "\n".join(out) + "\n\n" + compact_report(rows)


COMPACT_BYTES = 48  # the compact-index issue's res-6 goal: resident bytes a vector
COMPACT_MS = 1.0  # ... one query at a time on one thread


def compact_report(rows: list[dict]) -> str:
    """The compact-index table: per resolution and codec re-ranked from an exact store, the fastest
    configuration (nprobe, R) meeting recall@10 >= 0.95 with km lost p99 within one H3 edge, else the
    one with the best recall@10; resident and disk bytes, clean and noisy recall, one-query p50."""
    noisy = {(r["resolution"], r["factory"], r["nprobe"]): r["recall_at_10"] for r in rows
             if r["queries"] == "photo+noise"}
    out = ["| res | codec (nprobe, re-ranked from the fp16 store) | resident B/vector | disk B/vector | recall@10 | "
           "noisy recall@10 | km lost p99 | ms one query (p50) | goal met |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for res in sorted({r["resolution"] for r in rows}):
        here = [r for r in rows if r["resolution"] == res and r["queries"] == "photo" and r.get("rerank_from") == "store"]
        for base in dict.fromkeys(r["factory"].split(" (")[0] for r in here):
            mine = [r for r in here if r["factory"].startswith(base + " (")]
            met = [r for r in mine if meets_goal(r)]
            best = min(met, key=lambda r: r["ms_single_p50"]) if met else \
                max(mine, key=lambda r: (r["recall_at_10"], -r["ms_single_p50"]))
            goal = meets_goal(best) and best["ms_single_p50"] <= COMPACT_MS and (
                res != 6 or best["resident_bytes_per_vector"] <= COMPACT_BYTES)
            out.append(f"| {res} | {best['factory']}, nprobe {best['nprobe']} | {best['resident_bytes_per_vector']:,.1f} | "
                       f"{best['disk_bytes_per_vector']:,} | {best['recall_at_10']:.3f} | "
                       f"{noisy.get((res, best['factory'], best['nprobe']), float('nan')):.3f} | "
                       f"{best['km_lost_p99']:,.1f} | {best['ms_single_p50']:.3f} | {'yes' if goal else 'no'} |")
    return "\n".join(out)
