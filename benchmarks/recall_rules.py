"""The rules that turn benchmarks/results/recall.json rows into decisions: the default codec per
resolution and the best code of <= 128 bytes. Shared by bench_recall.py (which measures and
records the choice) and recall_report.py (which prints it); neither imports the other.
"""

from __future__ import annotations

REPORT_NPROBE = 16  # one nprobe for the per-codec tables and the bytes plot, comparable across res
RECALL_TARGET = 0.95


MAX_MS = 1.0  # a default must answer within 1 ms per query (one thread)


def code_bytes(factory: str) -> int:
    """Bytes of codes per vector that a codec keeps (ids and list overhead excluded), from the
    factory string: memory is dominated by these, list overhead differs by a few bytes."""
    import re

    total = 0
    for part in factory.split(" (")[0].split(","):
        part = part.strip()
        if part == "Flat" or part == "RFlat":
            total += 2048
        elif part == "SQ8" or part == "Refine(SQ8)":
            total += 512
        elif part in ("SQfp16", "Refine(SQfp16)"):
            total += 1024
        elif part == "SQ4":
            total += 256
        elif m := re.fullmatch(r"PQ(\d+)(?:x(\d+))?(fs|np)?", part):
            total += int(m[1]) * int(m[2] or 8) // 8
        elif m := re.fullmatch(r"RaBitQ(\d*)", part):  # 1 bit a dimension (+ ex-bits), 8 B of factors
            total += 512 * int(m[1] or 1) // 8 + 8
    return total


def choose_default(rows: list[dict], resolution: int) -> dict | None:
    """The issue's rule: recall@10 >= 0.95 (clean photo queries) with the least memory.

    Per codec, the smallest measured nprobe reaching recall@10 >= 0.95 within MAX_MS per query
    and no slower than exact search at that resolution (an approximate index slower than Flat has
    no reason to exist); then the codec with the fewest code bytes per vector (the memory that
    grows with the gallery: ids, centroids and list overhead differ by < 3% between the IVF
    flavours of one codec), ties to the faster. A configuration that re-ranks from an exact store
    on disk qualifies only if it also keeps top-1 km lost p99 within one H3 edge: the disk buys
    exactness, not a cheaper miss."""
    here = [r for r in rows if r["resolution"] == resolution and r["queries"] == "photo"]
    flat_ms = min((r["ms_per_query"] for r in here if r["factory"] == "Flat"), default=MAX_MS)
    best_per_codec: dict[str, dict] = {}
    for r in here:
        if r["factory"] == "Flat" or r["recall_at_10"] < RECALL_TARGET or r["ms_per_query"] > min(MAX_MS, flat_ms):
            continue
        if r.get("disk_bytes_per_vector") and not meets_goal(r):
            continue  # an exact store costs 1 KB a vector of disk: it must buy top-1s within one cell edge
        prev = best_per_codec.get(r["factory"])
        if prev is None or (r["nprobe"] or 0) < (prev["nprobe"] or 0):
            best_per_codec[r["factory"]] = r
    if not best_per_codec:
        return None
    best = min(best_per_codec.values(), key=lambda r: (code_bytes(r["factory"]), r["ms_per_query"]))
    out = {k: best[k] for k in ("resolution", "factory", "nprobe", "bytes_per_vector", "recall_at_10", "km_lost_p99",
                                "ms_per_query", "build_s")}
    out["rerank"] = best.get("rerank") or 0
    out["code_bytes"] = code_bytes(best["factory"])
    return out


def chosen_all(rows: list[dict]) -> list[dict]:
    return [c for c in (choose_default(rows, r) for r in sorted({row["resolution"] for row in rows})) if c]


GOAL_BYTES = 128  # the goal at res 6: recall@10 >= 0.95, km lost p99 <= one edge, <= 128 B


def best_compact(rows: list[dict], resolution: int, rerank: bool, by: str = "ms_per_query") -> dict | None:
    """The best code of <= GOAL_BYTES at ``resolution`` (clean queries). Without re-ranking:
    the highest recall@10 within MAX_MS. With it: among rows meeting the goal (recall@10 >= 0.95
    and km lost p99 <= one H3 edge) the least ``by`` (ms_per_query, or bytes_per_vector: codes,
    ids and lists), ties to the faster; when none meets it, the highest recall@10."""
    here = [r for r in rows if r["resolution"] == resolution and r["queries"] == "photo"
            and code_bytes(r["factory"]) <= GOAL_BYTES and bool(r.get("rerank")) == rerank]
    if not rerank:
        here = [r for r in here if r["ms_per_query"] <= MAX_MS]
        return max(here, key=lambda r: (r["recall_at_10"], -r["ms_per_query"]), default=None)
    met = [r for r in here if meets_goal(r)]
    if met:
        return min(met, key=lambda r: (r[by], r["ms_per_query"]))
    return max(here, key=lambda r: (r["recall_at_10"], -r["ms_per_query"]), default=None)


def meets_goal(row: dict) -> bool:
    """The issue's res-6 goal for a row: recall@10 >= 0.95 and km lost p99 <= one H3 edge."""
    return row["recall_at_10"] >= RECALL_TARGET and row["km_lost_p99"] <= edge_km(row["resolution"])


def edge_km(resolution: int) -> float:
    import h3

    return h3.average_hexagon_edge_length(resolution, "km")


def budget_candidates(rows: list[dict]) -> list[dict]:
    """The configurations ``build_index --max-memory`` chooses among (geoindex.index.budget.MEASURED):
    per resolution, every codec (with its re-ranking depth and source) that meets the goal (recall@10
    >= 0.95, km lost p99 <= one H3 edge; clean queries), at the nprobe answering one query fastest
    (ms_single_p50). Exact Flat, OPQ and refine-index codecs are left out (Flat is never smaller;
    the others need search parameters the budget does not carry)."""
    best: dict[tuple, dict] = {}
    for r in rows:
        base = r["factory"].split(" (")[0]
        if (r["queries"] != "photo" or not meets_goal(r) or r.get("ms_single_p50") is None or r["nprobe"] is None
                or any(t in base for t in ("OPQ", "Refine", "RFlat")) or base == "Flat"):
            continue
        store = "fp16" if r.get("rerank") and r.get("rerank_from") == "store" else None
        key = (r["resolution"], base, r.get("rerank") or 0, store)
        if key not in best or r["ms_single_p50"] < best[key]["ms_single_p50"]:
            best[key] = {"resolution": r["resolution"], "factory": base, "nprobe": r["nprobe"],
                         "rerank": r.get("rerank") or 0, "store": store, "recall_at_10": r["recall_at_10"],
                         "km_lost_p99": r["km_lost_p99"], "ms_single_p50": r["ms_single_p50"]}
    return sorted(best.values(), key=lambda m: (m["resolution"], m["ms_single_p50"], m["factory"]))
