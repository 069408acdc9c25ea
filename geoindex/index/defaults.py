"""The measured default index per H3 resolution, as plain strings: what ``auto`` builds.

Read by :mod:`geoindex.index.factory` (which parses the search strings) and by the commands' help
texts, which are generated from this table so that they cannot go stale. Imports nothing heavy:
``geoindex build --help`` reads it without loading FAISS or torch.
"""

from __future__ import annotations

FLAT_MAX = 20_000  # galleries below this many rows are searched exactly (Flat)
# (factory, search) per H3 resolution, from benchmarks/results/recall.json "chosen" (README,
# "Index factories and the default"): the fewest code bytes reaching recall@10 >= 0.95 within
# 1 ms a query. SQ8 (512 B) at res 3-4. At res 5-6, 32-byte PQ codes on the lists of the H3
# parents at res 2 find the neighbourhood and the 256 best are re-ranked from the exact fp16 store
# on disk (the search re-ranks, so the build writes one). Res 6: 41 B/vector resident instead of
# SQ4's 271, recall@10 0.972 instead of 0.953, top-1 km lost p99 0 instead of 6.9 km. Res 5: 49
# B/vector instead of SQ8's 534, recall@10 0.974 instead of 0.961, km lost p99 0 instead of 17.
MEASURED: dict[int, tuple[str, str]] = {
    3: ("IVF,SQ8", "nprobe=32"),
    4: ("IVF,SQ8", "nprobe=16"),
    5: ("IVFH3r2,PQ32", "nprobe=64,rerank=256"),
    6: ("IVFH3r2,PQ32", "nprobe=8,rerank=256"),
}


def describe_defaults() -> str:
    """One line per the table, for help texts: ``"Flat to res 2; res 3: IVF,SQ8 nprobe=32; ..."``."""
    low, high = min(MEASURED), max(MEASURED)
    parts = [f"Flat to res {low - 1}"]
    parts += [f"res {r}{'+' if r == high else ''}: {factory} {search}" for r, (factory, search) in sorted(MEASURED.items())]
    return "; ".join(parts) + f"; CSV galleries: Flat under {FLAT_MAX:,} rows, else IVF,SQ8"
