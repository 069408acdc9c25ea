"""Same bytes before and after a refactor: build the same galleries with two checkouts and compare.

    python tools/compare_builds.py inputs IN                    # the shared inputs: a lat,lng CSV, 300 photos
    PYTHONPATH=OLD python tools/compare_builds.py build IN BASE  # every gallery, with the code at OLD
    PYTHONPATH=NEW python tools/compare_builds.py build IN NEW
    python tools/compare_builds.py compare BASE NEW              # exit 1 on any difference

The galleries (issue 37's list): a res-2 Flat cell index, a res-3 IVF cell index with lists on disk,
a CSV gallery, a 300-photo gallery (tiny random CLIP), the same photos in an IVF with lists on disk
and in an IVF with PQ codes re-ranked from the exact store. ``compare`` checks the SHA-256 of every
index file (vectors.faiss, lists.ivfdata, the exact store, hot columns), every DuckDB table row for
row, and the manifests with the fields that legitimately differ between two runs left out (timings,
paths, dates, memory samples; a DuckDB file's checksum, as its bytes vary with identical rows). A key
only the second build's manifest has (e.g. a photo gallery's ``self_check``, new with the one
pipeline) is printed as a note, not counted as a difference; a key it lost is a difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

BUILDS = {
    "r2-flat": ["--resolution", "2", "--factory", "Flat"],
    "r3-ivf-disk": ["--resolution", "3", "--lists-on-disk"],
    "csv": ["--gallery-csv", "{IN}/points.csv"],
    "photos-300": ["--photos", "{IN}/photos/photos.csv", "--clip-model", "tiny-test"],
    "photos-300-ivf-disk": ["--photos", "{IN}/photos/photos.csv", "--clip-model", "tiny-test",
                            "--factory", "IVF8,SQ8", "--lists-on-disk"],
    "photos-300-pq": ["--photos", "{IN}/photos/photos.csv", "--clip-model", "tiny-test",
                      "--factory", "IVF8,PQ16", "--search", "nprobe=4,rerank=40"],
}
# manifest keys whose values differ between any two runs (wall time, where, when, how much memory)
VOLATILE = {"timings", "seconds", "created", "created_at", "built_at", "date", "memory_peak", "stages", "host",
            "machine", "path", "csv", "out", "features", "image_root", "elapsed_s", "peak_rss_mib", "versions",
            "timings_s", "peak_memory"}


def inputs(folder: Path) -> None:
    import numpy as np

    from geoindex.train.synthetic import write_photos

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(37)
    lat, lng = np.degrees(np.arcsin(rng.uniform(-1, 1, 3000))), rng.uniform(-180, 180, 3000)
    (folder / "points.csv").write_text("lat,lng\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in zip(lat, lng)))
    write_photos(folder / "photos", 300)
    print(f"inputs in {folder}")


def build(folder: Path, out: Path, only: list[str] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, args in BUILDS.items():
        if only and name not in only:
            continue
        argv = [a.replace("{IN}", str(folder)) for a in args]
        cmd = [sys.executable, "-m", "geoindex", "build", *argv, "--out", str(out / name), "--no-progress", "-q"]
        print("$ PYTHONPATH=" + os.environ.get("PYTHONPATH", "") + " " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _strip(value):
    if isinstance(value, dict) and "files" in value and isinstance(value["files"], dict):
        # a DuckDB file's bytes differ between two writes of the same rows (its rows are compared
        # table by table instead); every other file's size and SHA-256 must match
        files = {k: (v if not k.endswith(".duckdb") else {"bytes": v.get("bytes")}) for k, v in value["files"].items()}
        value = {**value, "files": files}
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _tables(db: Path) -> dict[str, list]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
        out = {}
        for t in names:
            cols = [r[0] for r in con.execute(f'DESCRIBE "{t}"').fetchall()]
            drop = {"path"}  # absolute image paths: the inputs folder is the same, kept for clarity
            keep = ", ".join(f'"{c}"' for c in cols if c not in drop)
            out[t] = con.execute(f'SELECT {keep} FROM "{t}" ORDER BY ALL').fetchall()
        return out
    finally:
        con.close()


def compare_one(a: Path, b: Path, notes: list[str] | None = None) -> list[str]:
    """The differences between two builds of one gallery; what only the second one's manifest
    records (a new key: nothing the first build wrote is changed) goes into ``notes``."""
    problems, notes = [], notes if notes is not None else []
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    if files_a != files_b:
        problems.append(f"files differ: only before {sorted(map(str, files_a - files_b))}, "
                        f"only after {sorted(map(str, files_b - files_a))}")
    for rel in sorted(files_a & files_b):
        if rel.suffix == ".duckdb":
            ta, tb = _tables(a / rel), _tables(b / rel)
            for t in sorted(set(ta) | set(tb)):
                if ta.get(t) != tb.get(t):
                    problems.append(f"{rel}: table {t} rows differ ({len(ta.get(t) or [])} vs {len(tb.get(t) or [])})")
        elif rel.name == "manifest.json":
            ma, mb = (_strip(json.loads((d / rel).read_text())) for d in (a, b))
            added = sorted(set(mb) - set(ma))  # a key the new build adds (reported, not a difference)
            if added:
                notes.append(f"{rel}: the second build's manifest adds {added}")
                mb = {k: v for k, v in mb.items() if k not in added}
            if ma != mb:
                keys = sorted(k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k))
                problems.append(f"{rel}: manifests differ in {keys}")
        elif _sha(a / rel) != _sha(b / rel):
            problems.append(f"{rel}: sha256 differs")
    return problems


def compare(base: Path, new: Path) -> int:
    bad = 0
    for name in BUILDS:
        a, b = base / name, new / name
        if not a.is_dir() or not b.is_dir():
            print(f"{name}: missing ({a.is_dir()=}, {b.is_dir()=})")
            bad += 1
            continue
        notes: list[str] = []
        problems = compare_one(a, b, notes)
        vectors = _sha(a / "vectors.faiss")
        print(f"{name}: {'SAME' if not problems else 'DIFFERENT'}  vectors.faiss {vectors[:16]}"
              + ("" if problems else "  (" + ", ".join(sorted(str(p.relative_to(a)) for p in a.rglob('*')
                                                               if p.is_file())) + ")"))
        for p in problems:
            print(f"    {p}")
        for note in notes:
            print(f"    note: {note}")
        bad += bool(problems)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compare_builds.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("inputs").add_argument("folder", type=Path)
    b = sub.add_parser("build")
    b.add_argument("folder", type=Path)
    b.add_argument("out", type=Path)
    b.add_argument("--only", action="append", choices=sorted(BUILDS), help="build only these (repeatable)")
    c = sub.add_parser("compare")
    c.add_argument("base", type=Path)
    c.add_argument("new", type=Path)
    args = p.parse_args(argv)
    if args.command == "inputs":
        inputs(args.folder)
    elif args.command == "build":
        build(args.folder, args.out, args.only)
    else:
        return compare(args.base, args.new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
